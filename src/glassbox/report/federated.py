"""The report of a federated run: the normal report, with the federation's own sections on top.

``write_federated_report`` is what the server calls once the final model,
``federated.json``, ``metrics.jsonl`` and ``partition.json`` are in the run
folder. It builds five sections from those files and hands them to
``glassbox.analysis.write_run_report``, which seals the ledger, writes the
model card and writes ``report.html`` through the run (so the ledger records
it), exactly as for a centralized run:

- Federation: strategy, clients, rounds, partition, final test accuracy, the
  clients' mean and worst accuracy, epsilon, bytes exchanged, wall time;
- Rounds: the server's test accuracy and the clients' mean and worst
  accuracy per round, epsilon per round under differential privacy, a table;
- Partition: every client's train/val rows and its label histogram;
- Fault tolerance: every dropped client and why, and how many clients each
  round went on with; rounds that kept the previous model;
- Federated provenance: the final model's SHA-256 and the ledger entries of
  every round.

Every string that comes from the run (reasons, class names, strategy names)
is HTML-escaped here, because the report inserts a section's ``html`` as is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from numbers import Real
from typing import TYPE_CHECKING, Any

import numpy as np

from glassbox.report import plots
from glassbox.report.html import _figure, _fmt_float, figures_html

if TYPE_CHECKING:
    from glassbox.config import Recipe
    from glassbox.run import Run

FEDERATED = "federated.json"
PARTITION = "partition.json"
MAX_CLASS_COLUMNS = 10  # the client table gets one column per class up to this many classes
MAX_LEGEND = 20  # classes beyond this are told apart by colour alone
_TEST, _MEAN, _WORST, _EPS = "#1f77b4", "#2ca02c", "#d62728", "#9467bd"


def write_federated_report(run: Run, recipe: Recipe, data: dict[str, Any]) -> None:
    """Write ``report.html`` (and ``model_card.json``) of the federated run in ``run``.

    ``data`` holds the run's splits (``train``, ``val``, ``test`` and the rest
    of what ``glassbox.pipeline.prepare_data`` returns); the federation's facts
    are read from the run folder.
    """
    from glassbox.analysis import write_run_report

    write_run_report(run, recipe, data, extra_sections=federated_sections(run, recipe, data))


def federated_sections(run: Run, recipe: Recipe, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The federation's report sections, from the files the server wrote into the run folder."""
    summary = _read_json(run, FEDERATED) or {}
    partition = _read_json(run, PARTITION) or {}
    rounds = sorted((r for r in run.metrics() if r.get("split") == "round"), key=lambda r: r.get("round", 0))
    results = run.meta().get("results", {})
    fed = recipe.federated
    classes = list(partition.get("classes") or data["train"].classes or [])
    return [
        summary_section(summary, partition, rounds, results, fed),
        rounds_section(rounds),
        partition_section(partition, summary, classes),
        faults_section(summary, fed),
        provenance_section(summary, _ledger_entries(run)),
    ]


# -- sections -------------------------------------------------------------------------------------


def summary_section(
    summary: Mapping[str, Any],
    partition: Mapping[str, Any],
    rounds: Sequence[Mapping[str, Any]],
    results: Mapping[str, Any],
    fed: Any = None,
) -> dict[str, Any]:
    """The lead "Federation" section: what ran, how well the model does, what it cost.

    ``fed`` is the recipe's ``federated`` section (for the privacy settings and
    the partition's parameters), or None.

    >>> s = summary_section({"strategy": "fedavg", "clients": 3, "rounds": 2, "bytes_sent": 2_000_000,
    ...                      "bytes_received": 1_000_000, "wall_s": 4.2},
    ...                     {"scheme": "dirichlet", "alpha": 0.3},
    ...                     [{"round": 2, "client_accuracy_mean": 0.8, "client_accuracy_worst": 0.5}],
    ...                     {"test_accuracy": 0.9})
    >>> s["lead"], "3.000 MB" in s["html"], "alpha 0.3" in s["html"]
    (True, True, True)
    """
    last = rounds[-1] if rounds else {}
    first = rounds[0] if rounds else {}
    final_acc = results.get("test_accuracy", last.get("test_accuracy"))
    sent, received = int(summary.get("bytes_sent") or 0), int(summary.get("bytes_received") or 0)
    privacy = getattr(fed, "privacy", None)
    facts: dict[str, str] = {
        "strategy": _s(summary.get("strategy")),
        "clients": _s(summary.get("clients")),
        "rounds": _s(summary.get("rounds")),
        "partition": _partition_text(partition, fed),
        "label skew": _skew_text(partition.get("skew")),
        "final test accuracy": _num(final_acc),
        "client accuracy, mean (last round)": _num(last.get("client_accuracy_mean")),
        "client accuracy, worst (last round)": _num(last.get("client_accuracy_worst")),
        "differential privacy": _privacy_text(summary, privacy),
        "bytes exchanged": f"{(sent + received) / 1e6:.3f} MB (server sent {sent / 1e6:.3f} MB, "
        f"received {received / 1e6:.3f} MB)",
        "wall time": f"{float(summary.get('wall_s') or last.get('wall_s') or 0.0):.1f} s",
    }
    sentence = (
        f"{_s(summary.get('strategy'))} over {_s(summary.get('clients'))} clients for "
        f"{_s(summary.get('rounds'))} rounds: the server's test accuracy went from "
        f"{_num(first.get('test_accuracy'))} (round 0, the initial model) to {_num(final_acc)}."
    )
    if last.get("client_accuracy_mean") is not None:
        sentence += (
            f" At the last round the global model scored {_num(last['client_accuracy_mean'])} on the"
            f" clients' own held-out rows on average and {_num(last.get('client_accuracy_worst'))} on the"
            " worst client."
        )
    html = f'<p class="headline">{sentence}</p>\n{_dl(facts)}'
    return {"title": "Federation", "html": html, "lead": True}


def rounds_section(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-round curves (accuracy; epsilon under differential privacy) and the table behind them.

    >>> s = rounds_section([{"round": 0, "test_accuracy": 0.3}, {"round": 1, "test_accuracy": 0.6,
    ...     "client_accuracy_mean": 0.5, "client_accuracy_worst": 0.4, "accepted": 2, "dropped": 1}])
    >>> s["html"].count("data:image/png;base64,"), s["html"].count("<tr>")
    (1, 3)
    """
    if not rounds:
        return {"title": "Rounds", "html": '<p class="muted">No round was logged.</p>', "lead": True}
    figures = []
    png = _round_plot(
        rounds,
        [
            ("test_accuracy", "test (server)", _TEST),
            ("client_accuracy_mean", "clients: mean", _MEAN),
            ("client_accuracy_worst", "clients: worst", _WORST),
        ],
        title="Accuracy per round",
        ylabel="accuracy",
    )
    if png is not None:
        figures.append(_figure("Accuracy per round", png, "federated-accuracy"))
    dp = any(_is_number(r.get("epsilon")) for r in rounds)
    if dp:
        png = _round_plot(rounds, [("epsilon", "epsilon", _EPS)], title="Privacy spent", ylabel="epsilon")
        if png is not None:
            figures.append(_figure("Epsilon per round", png, "federated-epsilon"))
    parts = [
        "<p>Round 0 is the initial model. Test accuracy is the server's evaluation of the global model on "
        "the held-out test split; the clients' mean and worst accuracy are the same model on each client's "
        "own held-out rows.</p>"
    ]
    if figures:
        parts.append(figures_html(figures))
    columns = [
        ("test_accuracy", "test accuracy"),
        ("test_loss", "test loss"),
        ("client_accuracy_mean", "clients: mean accuracy"),
        ("client_accuracy_worst", "clients: worst accuracy"),
        ("train_loss", "train loss"),
        ("accepted", "accepted"),
        ("dropped", "dropped"),
    ]
    if dp:
        columns.append(("epsilon", "epsilon"))
    head = "".join(f"<th>{escape(name)}</th>" for _, name in columns)
    body = []
    for r in rounds:
        cells = "".join(f'<td class="n">{_num(r.get(k))}</td>' for k, _ in columns)
        mb = (int(r.get("bytes_sent") or 0) + int(r.get("bytes_received") or 0)) / 1e6
        body.append(
            f'<tr><td class="n">{_s(r.get("round"))}</td>{cells}<td class="n">{mb:.3f}</td>'
            f'<td class="n">{float(r.get("wall_s") or 0.0):.1f}</td></tr>'
        )
    parts.append(
        f'<table class="num"><thead><tr><th>round</th>{head}<th>MB exchanged (so far)</th>'
        f"<th>wall s (so far)</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
    )
    return {"title": "Rounds", "html": "\n".join(parts), "lead": True}


def partition_section(
    partition: Mapping[str, Any], summary: Mapping[str, Any], classes: Sequence[str]
) -> dict[str, Any]:
    """Each client's rows (train, its own validation, total) and label histogram, as a table and a plot.

    >>> s = partition_section({"scheme": "iid", "sizes": [5, 4], "label_histograms": [[3, 2], [1, 3]],
    ...                        "clients": [{"partition": 0, "train": 4, "val": 1},
    ...                                    {"partition": 1, "train": 3, "val": 1}]}, {}, ["<a>", "b"])
    >>> "&lt;a&gt;" in s["html"], "<a>" in s["html"], s["html"].count("data:image/png;base64,")
    (True, False, 1)
    """
    sizes = list(partition.get("sizes") or [])
    rows = {int(c["partition"]): c for c in partition.get("clients") or [] if isinstance(c, Mapping)}
    hists = partition.get("label_histograms")
    n = max(len(sizes), len(rows), len(hists or []))
    if n == 0:
        return {"title": "Partition", "html": '<p class="muted">No partition recorded.</p>', "lead": True}
    accuracy = _last_client_accuracy(summary)
    per_class = hists is not None and 0 < len(classes) <= MAX_CLASS_COLUMNS
    head = "<th>client</th><th>train rows</th><th>val rows</th><th>rows</th>"
    if per_class:
        head += "".join(f"<th>{escape(str(c))}</th>" for c in classes)
    if accuracy:
        head += "<th>accuracy (last round)</th>"
    body = []
    for k in range(n):
        row = rows.get(k, {})
        cells = [
            _s(k),
            _s(row.get("train")),
            _s(row.get("val")),
            _s(sizes[k] if k < len(sizes) else None),
        ]
        if per_class:
            counts = list(hists[k]) if k < len(hists) else []
            cells += [_s(counts[j] if j < len(counts) else None) for j in range(len(classes))]
        if accuracy:
            cells.append(_num(accuracy.get(k)))
        body.append("<tr>" + "".join(f'<td class="n">{c}</td>' for c in cells) + "</tr>")
    parts = [
        f"<p>The training split's {_s(partition.get('rows', sum(sizes)))} rows, split among {n} clients"
        f" ({_partition_text(partition, None)}; label skew {_num(partition.get('skew'))}). Each"
        " client trains on its train rows and keeps its val rows to evaluate the global model on; the test"
        " split stays with the server.</p>",
        f'<table class="num"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>',
    ]
    if hists:
        png = label_histogram_plot(np.asarray(hists, dtype=float), classes)
        parts.append(figures_html([_figure("Labels per client", png, "federated-labels")]))
    else:
        parts.append('<p class="muted">This data has no labels to count per client.</p>')
    return {"title": "Partition", "html": "\n".join(parts), "lead": True}


def faults_section(summary: Mapping[str, Any], fed: Any = None) -> dict[str, Any]:
    """Every dropped client (round, partition, reason), how many clients each round went on with,
    and the rounds that kept the previous model.

    >>> s = faults_section({"dropped": [{"round": 1, "node": 2, "partition": 1, "reason": "<NaN>"}],
    ...                     "per_round": [{"round": 1, "accepted": 2, "dropped": [{"node": 2}]}]})
    >>> "&lt;NaN&gt;" in s["html"], "2 of 3 clients" in s["html"]
    (True, True)
    """
    dropped = [d for d in summary.get("dropped") or [] if isinstance(d, Mapping)]
    per_round = [r for r in summary.get("per_round") or [] if isinstance(r, Mapping)]
    parts = []
    faults = getattr(fed, "faults", None)
    drills = {
        what: list(getattr(faults, key, []) or [])
        for key, what in (
            ("fail", "errors raised by"),
            ("nan", "NaN updates from"),
            ("wrong_shape", "wrong-shaped tensors from"),
            ("scale", "updates scaled by 100 from"),
        )
    }
    said = "; ".join(
        f"{what} client{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"
        for what, ids in drills.items()
        if ids
    )
    if said:
        parts.append(f'<p class="muted">The recipe\'s fault drill, every round: {escape(said)}.</p>')
    if dropped:
        body = "".join(
            f'<tr><td class="n">{_s(d.get("round"))}</td><td class="n">{_s(d.get("partition"))}</td>'
            f'<td class="n">{_s(d.get("node"))}</td><td>{_s(d.get("reason"))}</td></tr>'
            for d in dropped
        )
        parts.append(
            f'<p class="headline">{len(dropped)} client update{"s" if len(dropped) != 1 else ""} dropped'
            f" in {len({d.get('round') for d in dropped})} of {len(per_round)} rounds.</p>"
        )
        parts.append(
            '<table class="num"><thead><tr><th>round</th><th>client (partition)</th><th>node</th>'
            f"<th>reason</th></tr></thead><tbody>{body}</tbody></table>"
        )
        parts.append(f"<p>{_went_on(per_round)}</p>")
    else:
        asked = sorted({_asked(r) for r in per_round})
        every = f": every round accepted all {asked[0]} clients it asked" if len(asked) == 1 else ""
        parts.append(f'<p class="headline">No client was dropped{every}.</p>')
    kept = summary.get("kept_previous") or {}
    if kept:
        items = "".join(
            f"<li>round {_s(r)}: {_s(why)}</li>" for r, why in sorted(kept.items(), key=lambda kv: int(kv[0]))
        )
        parts.append(
            f"<p>{len(kept)} round{'s' if len(kept) != 1 else ''} kept the previous global model instead of "
            f"aggregating:</p><ul>{items}</ul>"
        )
    else:
        parts.append("<p>No round kept the previous model: every round aggregated a new one.</p>")
    return {"title": "Fault tolerance", "html": "\n".join(parts), "lead": True}


def provenance_section(summary: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The final model's SHA-256 and, per round, the ledger entries that record it.

    ``entries`` are the run's ledger entries (parsed lines of ``ledger.jsonl``).

    >>> s = provenance_section({"final_model_sha256": "ab" * 32},
    ...     [{"seq": 6, "kind": "federated-round", "data": {"round": 0, "model_sha256": "cd" * 32}}])
    >>> "abab" in s["html"], "federated-update" in s["html"], "glassbox verify" in s["html"]
    (True, True, True)
    """
    final = summary.get("final_model_sha256")
    updates: dict[int, list[int]] = {}
    round_entries = []
    model_digest = None
    for e in entries:
        data = e.get("data") or {}
        if e.get("kind") == "federated-update" and "round" in data:
            updates.setdefault(int(data["round"]), []).append(int(e["seq"]))
        elif e.get("kind") == "federated-round" and "round" in data:
            round_entries.append((int(data["round"]), e))
        elif e.get("kind") == "model" and data.get("model_sha256"):
            model_digest = data["model_sha256"]
    parts = [
        _dl({"final model SHA-256": f"<code>{_s(final)}</code>"}),
        "<p>Every round's accepted client updates (one <code>federated-update</code> entry each, with the "
        "update's SHA-256) and its aggregated model (a <code>federated-round</code> entry with the model's "
        "SHA-256, the dropped clients and why, and epsilon) are signed, hash-chained ledger entries, which "
        "<code>glassbox verify RUN</code> checks with the rest of the ledger.</p>",
    ]
    if model_digest is not None:
        same = model_digest == final
        parts.append(
            "<p>The ledger's model entry records the same SHA-256 for model.safetensors' weights.</p>"
            if same
            else f'<p class="headline">The ledger\'s model entry records a different SHA-256 '
            f"(<code>{_s(model_digest)}</code>): the saved model is not the last round's.</p>"
        )
    if round_entries:
        body = "".join(
            f'<tr><td class="n">{r}</td><td class="n">{_s(e.get("seq"))}</td>'
            f"<td>{_entry_range(updates.get(r, []))}</td>"
            f"<td><code>{_s((e.get('data') or {}).get('model_sha256'))}</code></td></tr>"
            for r, e in round_entries
        )
        parts.append(
            '<table class="num"><thead><tr><th>round</th><th>federated-round entry</th>'
            "<th>federated-update entries</th><th>aggregated model SHA-256</th></tr></thead>"
            f"<tbody>{body}</tbody></table>"
        )
    return {"title": "Federated provenance", "html": "\n".join(parts), "lead": True}


# -- plots ----------------------------------------------------------------------------------------


def _round_plot(
    rounds: Sequence[Mapping[str, Any]],
    series: Sequence[tuple[str, str, str]],
    *,
    title: str,
    ylabel: str,
) -> bytes | None:
    """One line per ``(key, label, colour)`` of ``series`` against the round; None without any point."""
    fig = plots._figure(5.6, 3.5)
    ax = fig.add_subplot()
    drawn = 0
    for key, label, color in series:
        xy = [
            (float(r["round"]), float(r[key]))
            for r in rounds
            if _is_number(r.get(key)) and _is_number(r.get("round"))
        ]
        if not xy:
            continue
        x, y = zip(*xy, strict=True)
        dense = len(xy) > 60
        ax.plot(
            x, y, label=label, color=color, linewidth=1.2 if dense else 1.8, marker=None if dense else "o"
        )
        drawn += 1
    if not drawn:
        return None
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    plots._tidy(ax)
    ax.legend(frameon=False)
    return plots._png(fig)


def label_histogram_plot(hists: np.ndarray, classes: Sequence[str]) -> bytes:
    """A stacked bar per client: how many of its rows hold each class (``hists`` is clients x classes)."""
    hists = np.atleast_2d(np.asarray(hists, dtype=float))
    n, k = hists.shape
    names = [_plain(plots._short(str(c))) for c in classes] + [str(j) for j in range(len(classes), k)]
    fig = plots._figure(min(max(5.6, 0.28 * n + 2.5), 14.0), 3.8)
    ax = fig.add_subplot()
    if k <= 10:
        colors = [f"C{j}" for j in range(k)]
    else:
        from matplotlib import colormaps

        cmap = colormaps["tab20" if k <= 20 else "viridis"]
        colors = [cmap(j / max(k - 1, 1)) if k > 20 else cmap(j) for j in range(k)]
    x = np.arange(n)
    bottom = np.zeros(n)
    for j in range(k):
        ax.bar(x, hists[:, j], bottom=bottom, color=colors[j], width=0.8, label=names[j])
        bottom += hists[:, j]
    if n <= 30:
        ax.set_xticks(x)
    else:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_title("Labels per client")
    ax.set_xlabel("client (partition)")
    ax.set_ylabel("rows")
    plots._tidy(ax)
    ax.grid(axis="x", visible=False)
    if k <= MAX_LEGEND:
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="class")
    return plots._png(fig)


# -- helpers --------------------------------------------------------------------------------------


def _read_json(run: Run, name: str) -> Any:
    path = run.path / name
    return json.loads(path.read_text()) if path.is_file() else None


def _ledger_entries(run: Run) -> list[dict[str, Any]]:
    from glassbox.ledger.chain import LEDGER

    path = run.path / LEDGER
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line.strip()]


def _is_number(value: Any) -> bool:
    return isinstance(value, Real | np.number) and not isinstance(value, bool | np.bool_)


def _s(value: Any) -> str:
    """``value`` as escaped text; None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return escape(str(value))


def _num(value: Any) -> str:
    """A metric to four significant figures; None (not measured) as a dash."""
    if not _is_number(value):
        return _s(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    return _fmt_float(float(value))


def _plain(text: str) -> str:
    # matplotlib would read "$...$" in a class name as mathtext.
    return text.replace("$", r"\$")


def _dl(items: Mapping[str, str]) -> str:
    """A two-column table; the values are already HTML."""
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in items.items())
    return f'<table class="kv">{rows}</table>'


def _partition_text(partition: Mapping[str, Any], fed: Any) -> str:
    """The scheme with the parameter that shapes it (escaped), e.g. ``dirichlet, alpha 0.3``."""
    scheme = partition.get("scheme")
    cfg = getattr(fed, "partition", None)
    if scheme is None and cfg is not None:
        scheme = cfg.scheme
    if scheme == "dirichlet":
        alpha = partition.get("alpha", getattr(cfg, "alpha", None))
        return f"dirichlet, alpha {_num(alpha)}"
    if scheme == "classes" and cfg is not None:
        return f"classes, {cfg.classes_per_client} classes a client"
    if scheme == "column" and cfg is not None and cfg.column:
        return f"column, one client per value of {escape(cfg.column)}"
    return _s(scheme)


def _skew_text(skew: Any) -> str:
    if not _is_number(skew):
        return "—"
    return f"{_num(skew)} (mean total-variation distance of each client's labels from all clients'; 0 is IID)"


def _privacy_text(summary: Mapping[str, Any], privacy: Any) -> str:
    eps, delta = summary.get("epsilon"), summary.get("delta")
    if privacy is None and eps is None:
        return "off"
    said = []
    if privacy is not None:
        said.append(f"{escape(str(privacy.mode))}, noise multiplier {_num(float(privacy.noise_multiplier))}")
        if delta is None:
            delta = privacy.delta
    spent = f"epsilon {_num(eps)} at delta {_num(delta)}" if _is_number(eps) else "epsilon not accounted"
    return spent + (f" ({said[0]})" if said else "")


def _last_client_accuracy(summary: Mapping[str, Any]) -> dict[int, float]:
    """Each client's accuracy (by partition) at the last round that has any."""
    for record in reversed(summary.get("per_round") or []):
        out = {
            int(c["partition-id"]): float(c["accuracy"])
            for c in record.get("clients") or []
            if _is_number(c.get("partition-id")) and _is_number(c.get("accuracy"))
        }
        if out:
            return out
    return {}


def _asked(record: Mapping[str, Any]) -> int:
    dropped = record.get("dropped") or []
    n_dropped = dropped if isinstance(dropped, int) else len(dropped)
    return int(record.get("accepted") or 0) + n_dropped


def _went_on(per_round: Sequence[Mapping[str, Any]]) -> str:
    """How many of the clients asked each round's accepted updates came from, as one sentence."""
    if not per_round:
        return "No round finished."
    counts = [(r.get("round"), int(r.get("accepted") or 0), _asked(r)) for r in per_round]
    if len({(a, n) for _, a, n in counts}) == 1:
        _, a, n = counts[0]
        return f"The run went on without them: every round went on with {a} of {n} clients."
    said = ", ".join(f"round {_s(r)}: {a} of {n}" for r, a, n in counts)
    return f"The run went on without them, with this many of the clients asked each round: {said}."


def _entry_range(seqs: Sequence[int]) -> str:
    if not seqs:
        return "—"
    seqs = sorted(seqs)
    if seqs == list(range(seqs[0], seqs[-1] + 1)):
        return f"{seqs[0]}" if len(seqs) == 1 else f"{seqs[0]} to {seqs[-1]} ({len(seqs)})"
    return ", ".join(map(str, seqs))
