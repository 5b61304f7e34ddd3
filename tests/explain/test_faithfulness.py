import itertools
import json
import math
from pathlib import Path

import torch

from glassbox.config import ModelConfig, TrainConfig
from glassbox.data import load_dataset, split_dataset
from glassbox.explain import explain
from glassbox.explain.faithfulness import deletion_insertion, random_like
from glassbox.nn import build_model
from glassbox.train import Trainer

torch.set_num_threads(1)


def _sigmoid(z):
    return 1 / (1 + math.exp(-z))


def test_deletion_insertion_known_answer_on_a_linear_model():
    w = torch.tensor([[0.0, 0.0, 0.0], [3.0, 2.0, 1.0]], dtype=torch.float64)
    forward = lambda x: x @ w.T  # noqa: E731 - p(class 1) = sigmoid(3 x0 + 2 x1 + x2)
    x, base = torch.ones(1, 3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64)
    out = deletion_insertion(forward, x, (x * w[1]), base, torch.tensor([1]))
    dele = [_sigmoid(z) for z in (6, 3, 1, 0)]  # remove x0, then x1, then x2
    ins = [_sigmoid(z) for z in (0, 3, 5, 6)]
    trap = lambda ys: sum((a + b) / 2 for a, b in itertools.pairwise(ys)) / 3  # noqa: E731
    assert torch.allclose(out["deletion_curve"][0], torch.tensor(dele, dtype=torch.float64))
    assert abs(float(out["deletion"][0]) - trap(dele)) < 1e-12
    assert abs(float(out["insertion"][0]) - trap(ins)) < 1e-12
    # The exact attributions give the best possible ordering: every other one is no better.
    rand = random_like(torch.ones(200, 3, dtype=torch.float64), seed=0)
    other = deletion_insertion(
        forward, x.expand(200, 3), rand, base.expand(200, 3), torch.ones(200, dtype=torch.long)
    )
    assert float(other["deletion"].min()) >= float(out["deletion"][0]) - 1e-12
    assert float(other["insertion"].max()) <= float(out["insertion"][0]) + 1e-12
    assert float(other["deletion"].mean()) > float(out["deletion"][0])


_CACHE = {}


def _trained():
    if "out" not in _CACHE:
        _CACHE["out"] = _explain_trained()
    return _CACHE["out"]


def _explain_trained():
    torch.manual_seed(0)
    tr, va, te = split_dataset(load_dataset("breast-cancer"), 0.15, 0.2, seed=0)
    model = build_model(ModelConfig(dim=16, depth=2, heads=2, dropout=0.0, attention="softmax"), tr)
    Trainer(model, TrainConfig(epochs=8, batch_size=16, threads=1)).fit(tr, va)
    return explain(model, te, background=tr, sample=40, methods=["integrated_gradients"])


def test_trained_breast_cancer_ig_is_complete_and_beats_random():
    ig = _trained()["methods"]["integrated_gradients"]
    assert ig["info"]["converged"] and ig["quality"]["completeness_max"] <= 0.05
    assert ig["ratios"]["deletion_auc"] > 1.3
    # Baseline-relative perturbations (what IG's attributions claim to describe) rank IG well above random;
    # plain additive noise barely tells them apart (see faithfulness.infidelity) and is only reported.
    assert ig["ratios"]["infidelity_baseline"] >= 2.0
    assert ig["ratios"]["infidelity"] is not None


def test_healthcare_recipe_model_meets_the_quality_bar(demo_run):
    """The issue's bar on the shipped healthcare model (the demo's recipe): IG complete to 0.05, 2x random.

    Read from the session's one ``glassbox demo`` run (conftest.py), which trains that recipe unchanged
    and explains it with every method, IG included: a second training here cost 40 s of the suite.
    """
    run = Path(demo_run[1]["run"])
    ig = json.loads((run / "explanations.json").read_text())["methods"]["integrated_gradients"]
    assert ig["info"]["converged"] and ig["quality"]["completeness_max"] <= 0.05
    assert ig["infidelity_matched"] == "infidelity_baseline"
    assert ig["ratios"]["infidelity_baseline"] >= 2.0
    assert ig["ratios"]["deletion_auc"] >= 2.0
