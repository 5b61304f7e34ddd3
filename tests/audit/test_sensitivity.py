"""Average sensitivity: exact on boolean functions, right on the resampling variants, logged in training."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from glassbox.audit.sensitivity import (
    SensitivityTracker,
    average_sensitivity,
    boolean_function,
    boolean_task,
    majority,
    parity,
    predict_fn,
    sparse_parity_subset,
    true_sensitivity,
)
from glassbox.config import ModelConfig, TrainConfig
from glassbox.errors import UserError
from glassbox.nn import build_model
from glassbox.report.sensitivity import sensitivity_section
from glassbox.train import Callback, Trainer


def bits(rows: int, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 2, (rows, n), generator=torch.Generator().manual_seed(seed)).float()


def all_bits(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)))  # (2^n, n)


def test_parity_is_exactly_n_at_every_row() -> None:
    res = average_sensitivity(parity, bits(200, 12), "boolean")
    assert res["mean"] == 12.0 and res["stderr"] == 0.0
    assert res["n"] == 12 and res["normalized"] == 1.0 and res["rows"] == 200
    assert res["per_position"] == [1.0] * 12


def test_sparse_parity_is_exactly_k_on_its_subset() -> None:
    subset = sparse_parity_subset(15, 4, seed=3)
    res = average_sensitivity(boolean_function("sparse_parity", 15, k=4, seed=3), bits(100, 15), "boolean")
    assert res["mean"] == 4.0 and res["stderr"] == 0.0
    assert [i for i, r in enumerate(res["per_position"]) if r] == subset
    assert true_sensitivity("sparse_parity", 15, k=4) == 4.0


@pytest.mark.parametrize("n", [7, 8, 9, 10])
def test_majority_over_every_input_equals_the_binomial_formula(n: int) -> None:
    res = average_sensitivity(majority, all_bits(n), "boolean")
    assert res["mean"] == pytest.approx(true_sensitivity("majority", n), abs=1e-12)
    if n % 2:
        assert true_sensitivity("majority", n) == n * math.comb(n - 1, (n - 1) // 2) / 2 ** (n - 1)


def test_majority_on_random_rows_within_the_standard_error_and_near_sqrt_2n_over_pi() -> None:
    n = 21
    res = average_sensitivity(majority, bits(3000, n, seed=1), "boolean")
    true = true_sensitivity("majority", n)
    assert abs(res["mean"] - true) < 4 * res["stderr"]
    assert res["stderr"] < 0.15
    assert true == pytest.approx(math.sqrt(2 * n / math.pi), rel=0.03)
    assert true_sensitivity("majority", 201) == pytest.approx(math.sqrt(2 * 201 / math.pi), rel=0.005)


def test_a_constant_has_sensitivity_zero_for_every_kind() -> None:
    const = lambda x: torch.zeros(len(x), dtype=torch.long)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    cases = [
        (bits(50, 6), "boolean", None),
        (torch.randn(50, 6, generator=g), "tabular", None),
        (torch.rand(20, 1, 8, 8, generator=g), "image", None),
        (torch.randint(0, 9, (20, 7), generator=g), "sequence", None),
    ]
    for X, kind, pool in cases:
        res = average_sensitivity(const, X, kind, pool=pool)
        assert res["mean"] == 0.0 and set(res["per_position"]) == {0.0}, kind


def test_tabular_reading_only_feature_0_matches_the_resampling_probability() -> None:
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(400, 5, generator=g)  # (M, F)
    X = torch.randn(150, 5, generator=g)  # (N, F)
    f = lambda x: (x[:, 0] > 0.3).long()  # noqa: E731
    g1 = torch.Generator().manual_seed(1)
    res = average_sensitivity(f, X, "tabular", pool=pool, draws=40, generator=g1)
    # Row i changes exactly when the drawn feature-0 value lands on the other side of 0.3.
    above = (pool[:, 0] > 0.3).double().mean()
    p = torch.where(X[:, 0] > 0.3, 1 - above, above)  # (N,)
    expected = float(p.mean())
    sd = math.sqrt(float((p * (1 - p)).sum()) / (40 * len(X) ** 2))  # noise of the draws around it
    assert abs(res["mean"] - expected) < 4 * sd
    assert res["per_position"][0] == pytest.approx(res["mean"]) and res["per_position"][1:] == [0.0] * 4
    assert res["normalized"] == pytest.approx(res["mean"] / 5)


def test_image_patch_perturbation_matches_the_direct_computation() -> None:
    g = torch.Generator().manual_seed(0)
    pool = torch.rand(300, 1, 8, 8, generator=g)
    X = torch.rand(60, 1, 8, 8, generator=g)
    # Reads pixel (3, 5): patch row 1, column 2 of the 4 x 4 grid of 2 x 2 patches, position 6.
    f = lambda x: (x[:, 0, 3, 5] > 0.5).long()  # noqa: E731
    res = average_sensitivity(f, X, "image", pool=pool, patch=2, draws=30)
    above = (pool[:, 0, 3, 5] > 0.5).double().mean()
    p = torch.where(X[:, 0, 3, 5] > 0.5, 1 - above, above)
    sd = math.sqrt(float((p * (1 - p)).sum()) / (30 * len(X) ** 2))
    assert abs(res["mean"] - float(p.mean())) < 4 * sd
    assert res["n"] == 16 and res["grid"] == [4, 4] and res["patch"] == 2
    assert [i for i, r in enumerate(res["per_position"]) if r] == [6]
    with pytest.raises(UserError, match="patch 3"):
        average_sensitivity(f, X, "image", pool=pool, patch=3)


def test_sequence_token_replacement_draws_from_the_pool_vocabulary() -> None:
    g = torch.Generator().manual_seed(0)
    pool = torch.randint(0, 10, (200, 6), generator=g)  # vocabulary 0..9
    X = torch.randint(0, 10, (300, 6), generator=g)
    f = lambda x: (x[:, 2] == 7).long()  # noqa: E731
    res = average_sensitivity(f, X, "sequence", pool=pool, draws=20)
    # A uniform token out of 10 leaves a 7 a 7 with probability 1/10 and makes a non-7 a 7 with 1/10.
    p = torch.where(X[:, 2] == 7, 0.9, 0.1).double()
    sd = math.sqrt(float((p * (1 - p)).sum()) / (20 * len(X) ** 2))
    assert abs(res["mean"] - float(p.mean())) < 4 * sd
    assert [i for i, r in enumerate(res["per_position"]) if r] == [2]


def test_seeded_and_subset_rows() -> None:
    X = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
    f = lambda x: (x.sum(1) > 0).long()  # noqa: E731

    def run(seed: int) -> dict:
        return average_sensitivity(f, X, "tabular", n_rows=64, generator=torch.Generator().manual_seed(seed))

    assert run(5) == run(5)
    assert run(5)["rows"] == 64
    assert run(5)["mean"] != run(6)["mean"]


def test_user_mistakes_raise_one_line_user_errors() -> None:
    f = lambda x: torch.zeros(len(x), dtype=torch.long)  # noqa: E731
    X = bits(4, 3)
    with pytest.raises(UserError, match="did you mean 'boolean'"):
        average_sensitivity(f, X, "bolean")
    with pytest.raises(UserError, match=r"values in \{0, 1\}"):
        average_sensitivity(f, X + 0.5, "boolean")
    with pytest.raises(UserError, match="argmax"):
        average_sensitivity(lambda x: torch.zeros(len(x), 2), X, "boolean")
    with pytest.raises(UserError, match="pool rows"):
        average_sensitivity(f, X, "tabular", pool=torch.zeros(5, 4))
    with pytest.raises(UserError, match="integer token ids"):
        average_sensitivity(f, X, "sequence")
    with pytest.raises(UserError, match="did you mean 'parity'"):
        boolean_task("parityy", 5, 10, 0)
    with pytest.raises(UserError, match="every"):
        SensitivityTracker(X, "boolean", every=0)
    with pytest.raises(UserError, match="non-empty"):
        SensitivityTracker(X[:0], "boolean")


def test_boolean_task_is_a_trainable_table_with_the_functions_labels() -> None:
    ds = boolean_task("sparse_parity", 10, rows=300, seed=4, k=2)
    assert ds.kind == "tabular" and ds.task == "classification" and ds.classes == ["0", "1"]
    assert ds.X.dtype == torch.float32 and ds.X.shape == (300, 10)
    assert set(ds.X.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(ds.y, parity(ds.X, sparse_parity_subset(10, 2, seed=4)))
    assert torch.equal(boolean_task("majority", 10, 300, 4).X, ds.X)  # same rows whatever the function
    model = build_model(ModelConfig(dim=16, depth=1, heads=2, dropout=0.0), ds)
    assert predict_fn(model)(ds.X).shape == (300,)


def test_tracker_logs_each_measured_epoch_into_the_history_in_eval_mode() -> None:
    torch.set_num_threads(1)
    data = boolean_task("majority", 7, rows=128, seed=0)
    model = build_model(ModelConfig(dim=16, depth=1, heads=2, dropout=0.5), data)
    modes: list[bool] = []
    model.register_forward_hook(lambda m, i, o: modes.append(m.training) if len(i[0]) == 32 * 7 else None)
    tracker = SensitivityTracker(data.X, "boolean", every=2, n_rows=32)

    class After(Callback):  # runs after the tracker: sees what the rest of training sees
        def __init__(self) -> None:
            self.training: list[bool] = []
            self.history: list[dict] = []

        def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict) -> None:
            self.training.append(trainer.model.training)
            self.history = list(trainer.history_)

    after = After()
    cfg = TrainConfig(epochs=4, batch_size=32, patience=None)
    trainer = Trainer(model, cfg, callbacks=[tracker, after]).fit(data, None)
    recs = [r for r in trainer.history_ if "sensitivity" in r]
    assert [r["epoch"] for r in recs] == [2, 4] and recs == tracker.records_
    assert [r["step"] for r in recs] == [8, 16]
    for r in recs:
        assert set(r) == {"epoch", "step", "sensitivity", "sensitivity_normalized"}
        assert 0 <= r["sensitivity"] <= 7
        assert r["sensitivity_normalized"] == pytest.approx(r["sensitivity"] / 7)
    assert modes == [False, False]  # one batched forward of the perturbed probe per measurement
    assert after.training == [True] * 4  # mode restored for the rest of training
    assert [r for r in after.history if "sensitivity" in r] == recs  # there by the epoch's end
    assert tracker.state_dict()["records"] == recs
    # Same weights, same fixed draws: the measurement is repeatable.
    assert tracker.measure(model)["mean"] == tracker.measure(model)["mean"]


def test_report_section_renders_boolean_and_image_results() -> None:
    res = average_sensitivity(majority, bits(100, 9), "boolean")
    res["true"] = true_sensitivity("majority", 9)
    hist = [
        {"epoch": e, "step": 5 * e, "sensitivity": 1.0 + e, "sensitivity_normalized": 0.1} for e in [1, 2]
    ]
    s = sensitivity_section(res, hist)
    assert s["title"] == "Average sensitivity"
    assert f"{res['mean']:.2f}" in s["html"] and "flipping one bit" in s["html"]
    assert s["html"].count("data:image/png;base64,") == 2
    img = average_sensitivity(lambda x: (x[:, 0, 0, 0] > 0.5).long(), torch.rand(10, 1, 8, 8), "image")
    s = sensitivity_section(img, None)
    assert "2 x 2 patch" in s["html"] and s["html"].count("data:image/png;base64,") == 1


def test_benchmark_runs_tiny_through_glassbox_bench() -> None:
    from glassbox.cli.bench import load_benchmark

    args = [
        "--quick",
        "--functions",
        "majority,parity",
        "--rows",
        "200",
        "--test-rows",
        "100",
        "--epochs",
        "1",
    ]
    res = load_benchmark("sensitivity").main(args)
    assert set(res["results"]) == {"majority", "parity"} and res["settings"]["quick"]
    assert res["results"]["parity"]["true_sensitivity"] == 20.0
    assert all(u["function_sensitivity_on_test_rows"] == u["true_sensitivity"] for u in res["units"][1:])
    assert set(res["findings"]) == {
        "majority_learned_with_its_sensitivity",
        "parity_not_learned_and_learned_function_insensitive",
    }
