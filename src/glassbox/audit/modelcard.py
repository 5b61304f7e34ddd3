"""The model card of a run: what the model is for, what it was trained on, how it does, and what to distrust.

Follows the headings of Mitchell et al. 2019 ("Model Cards for Model
Reporting") as far as one run can fill them honestly: intended use (from the
recipe's ``report.intended_use``, or a plain statement that none was given),
the data with its ledger hashes, metrics overall and by group, the
explanation summary with its quality scores, limitations (the recipe's, plus
those glassbox can see for itself), and the provenance a reviewer can check
with ``glassbox verify``: the Merkle root and the signing key's fingerprint.

Plain dicts in, a plain JSON-able dict out (``model_card.json``); the
report renders it (``glassbox.report.modelcard``).

>>> card = model_card(
...     recipe={"name": "toy", "data": {"source": "iris", "label_noise": 0.0}, "report": {}},
...     meta={"results": {"test_accuracy": 0.9}, "glassbox_version": "0.1.0"},
...     data={"summary": {"name": "iris", "rows": 150}, "splits": {"train": 98, "val": 22, "test": 30}},
...     ledger={"merkle_root": "ab" * 32, "tree_size": 12, "public_key_sha256": "cd" * 32},
... )
>>> card["metrics"]["overall"], card["limitations"][0].startswith("Evaluated on 30 held-out rows")
({'test_accuracy': 0.9}, True)
"""

from __future__ import annotations

from typing import Any

SMALL_TEST = 200  # below this many test rows, say how coarse the test metrics are
# An explanation method whose deletion AUC or (matched) infidelity is less than this
# many times better than random attributions' gets a limitation line. Insertion AUC
# is left out: it is bounded by 1, so against a random control above 0.5 no method
# could ever reach a ratio of 2.
WEAK_RATIO = 1.5
COMPLETENESS_TOL = 0.05  # a method claiming completeness that misses it by more gets a limitation line


def model_card(
    *,
    recipe: dict[str, Any],
    meta: dict[str, Any],
    data: dict[str, Any],
    ledger: dict[str, Any],
    valuation: dict[str, Any] | None = None,
    explanations: dict[str, Any] | None = None,
    audit: dict[str, Any] | None = None,
    baselines: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the card from the run's recipe, meta.json, data summary, ledger facts and analyses.

    ``baselines`` (``baselines.json``) adds which wins: glassbox's model or the best baseline.
    """
    report = recipe.get("report", {}) or {}
    splits = data.get("splits", {})
    results = meta.get("results", {})
    card: dict[str, Any] = {
        "model": {
            "name": recipe.get("name"),
            "family": "glassbox Transformer",
            "config": recipe.get("model", {}),
            "glassbox_version": meta.get("glassbox_version"),
            "git_commit": meta.get("git_commit"),
            "trained": meta.get("started"),
        },
        "intended_use": report.get("intended_use")
        or "Not stated in the recipe (set report.intended_use). Treat as a research model.",
        "data": {
            **data.get("summary", {}),
            "splits": splits,
            "label_noise": (recipe.get("data") or {}).get("label_noise", 0.0),
            "ledger": {
                "dataset_entry": ledger.get("dataset_entry"),
                "dataset_entry_sha256": ledger.get("dataset_entry_sha256"),
                "digests": ledger.get("data_digests"),
            },
        },
        "metrics": {"overall": dict(results)},
        "provenance": {
            "merkle_root": ledger.get("merkle_root"),
            "tree_size": ledger.get("tree_size"),
            "tree_head_entry": ledger.get("tree_head_entry"),
            "public_key_sha256": ledger.get("public_key_sha256"),
            "public_key_pem": ledger.get("public_key_pem"),
            "check": "glassbox verify RUN (exit 0: every file, entry and signature holds)",
        },
        "limitations": _limitations(report, splits, recipe, explanations, audit, meta.get("federated")),
    }
    if audit is not None:
        card["metrics"]["by_group"] = {"sensitive": audit.get("sensitive"), "groups": audit.get("by_group")}
        card["fairness"] = {
            "differences": audit.get("differences"),
            "mitigation": audit.get("mitigation"),
            "objective": audit.get("objective"),
        }
    if baselines and baselines.get("comparison"):
        card["baselines"] = {
            **baselines["comparison"],
            "accuracy": {r["name"]: r["test"]["accuracy"] for r in baselines.get("baselines", [])},
        }
    if explanations is not None:
        card["explanations"] = explanations
    if valuation is not None:
        card["data_valuation"] = {k: v for k, v in valuation.items() if k != "notes"}
    return card


def _limitations(
    report: dict[str, Any],
    splits: dict[str, int],
    recipe: dict[str, Any],
    explanations: dict[str, Any] | None,
    audit: dict[str, Any] | None,
    federated: dict[str, Any] | None = None,
) -> list[str]:
    out = []
    if isinstance(federated, dict):
        eps = federated.get("epsilon")
        privacy = (
            f"with differential privacy at epsilon {eps:.3g}, delta {federated.get('delta'):g}"
            if eps is not None
            else "without differential privacy, so an update can reveal rows of the client that sent it"
        )
        out.append(
            f"Trained federated ({federated.get('strategy')}, {federated.get('clients')} clients,"
            f" {federated.get('rounds')} rounds): no training row left its client, but the server saw every"
            f" client's model updates and input statistics (count, mean, std), {privacy}."
        )
    n_test = splits.get("test")
    if n_test is not None:
        coarse = f"; one row is {100 / n_test:.2f} points of accuracy" if n_test < SMALL_TEST else ""
        out.append(
            f"Evaluated on {n_test} held-out rows of the same source as the training data{coarse}; "
            "there is no external or prospective validation."
        )
    noise = (recipe.get("data") or {}).get("label_noise", 0.0)
    if noise:
        out.append(f"{noise:.0%} of the training labels were flipped on purpose (a valuation experiment).")
    if explanations is not None:
        for name, m in explanations.get("methods", {}).items():
            ratios = m.get("ratios") or {}
            keys = ("deletion_auc", m.get("infidelity_matched", "infidelity"))
            weak = {k: ratios[k] for k in keys if ratios.get(k) is not None and ratios[k] < WEAK_RATIO}
            if weak:
                said = ", ".join(f"{k.replace('_', ' ')} {v:.2f}x" for k, v in weak.items())
                out.append(
                    f"Explanations by {name} are barely better than random attributions ({said}; "
                    f"below {WEAK_RATIO:g}x): do not read them as the model's reasons."
                )
            worst = (m.get("quality") or {}).get("completeness_max")
            if worst is not None and worst > COMPLETENESS_TOL:
                out.append(
                    f"{name} claims its attributions sum to the change in the logit, but they miss it by"
                    f" up to {worst:.3g} here (Captum's DeepLift rules do not cover attention's softmax"
                    " or LayerNorm)."
                    if name == "deeplift"
                    else f"{name}'s attributions miss the change in the logit by up to {worst:.3g}."
                )
        for name, why in explanations.get("skipped", {}).items():
            out.append(f"No {name} explanations: {why}")
    if audit is not None:
        out.extend(audit.get("warnings", []))
    else:
        out.append("No fairness audit was run (add an audit: section naming a group column).")
    out.extend(report.get("limitations") or [])
    return out
