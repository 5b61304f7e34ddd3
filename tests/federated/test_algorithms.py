from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from glassbox.config import ModelConfig, TrainConfig
from glassbox.data import load_dataset, split_dataset
from glassbox.errors import UserError
from glassbox.federated.algorithms import (
    ProximalTerm,
    ScaffoldCorrection,
    check_scaffold_config,
    coordinate_median,
    fedavg,
    krum,
    krum_select,
    scaffold_client_update,
    scaffold_server_update,
    trimmed_mean,
)
from glassbox.nn import build_model
from glassbox.train import Trainer

f64 = torch.float64


# -- the quadratic problem: f_i(w) = 1/2 (w - b_i)^T A_i (w - b_i) ---------------------------------------


def quadratic(n_clients: int = 4, dim: int = 3, seed: int = 0):
    """Per-client positive definite A_i and optima b_i, all different, and the global optimum w*."""
    g = np.random.default_rng(seed)
    A, b = [], []
    for _ in range(n_clients):
        q, _ = np.linalg.qr(g.normal(size=(dim, dim)))
        A.append(q @ np.diag(g.uniform(0.5, 3.0, size=dim)) @ q.T)
        b.append(g.normal(scale=2.0, size=dim))
    # The minimizer of sum_i f_i: sum_i A_i (w - b_i) = 0.
    w_star = np.linalg.solve(sum(A), sum(a @ bi for a, bi in zip(A, b, strict=True)))
    return [torch.tensor(a) for a in A], [torch.tensor(bi) for bi in b], torch.tensor(w_star)


class Point(nn.Module):
    """The model of the quadratic problem: just the point w."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())


def local_steps_via_callback(x, A, b, c, c_i, steps, lr):
    """Local SCAFFOLD training the way the Trainer does it: backward, callbacks, SGD step.

    The Trainer needs a classification Dataset and cross-entropy, which a
    quadratic is not, so this loop drives the callback directly with a stub
    trainer (all the callback reads is ``trainer.model``); the real Trainer
    path is tested on iris below.
    """
    model = Point(x["w"])
    stub = SimpleNamespace(model=model)
    cb = ScaffoldCorrection(c, c_i)
    cb.on_fit_start(stub)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        d = model.w - b
        (0.5 * d @ A @ d).backward()
        cb.on_after_backward(stub, None)
        opt.step()
    return {"w": model.w.detach().clone()}


def fedavg_local_steps(x, A, b, steps, lr):
    w = x["w"].clone()
    for _ in range(steps):
        w = w - lr * (A @ (w - b))
    return {"w": w}


def test_scaffold_one_round_matches_the_papers_equations():
    A, b, _ = quadratic()
    n, steps, lr, eta_g = len(A), 5, 0.07, 0.8
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, generator=g, dtype=f64)
    c_is = [torch.randn(3, generator=g, dtype=f64) for _ in range(n)]
    c = torch.stack(c_is).mean(0)  # the invariant c = mean_i c_i
    S = [0, 2, 3]  # partial participation: client 1 sits this round out

    # By hand, Algorithm 1 line by line.
    hand_y, hand_dy, hand_dc, hand_ci = {}, {}, {}, {}
    for i in S:
        y = x.clone()
        grads = []
        for _ in range(steps):
            gi = A[i] @ (y - b[i])
            grads.append(gi)
            y = y - lr * (gi + c - c_is[i])
        ci_new = c_is[i] - c + (x - y) / (steps * lr)
        # Option II is the mean of the local gradients (exact gradients here): a second check of the formula.
        torch.testing.assert_close(ci_new, torch.stack(grads).mean(0), rtol=0, atol=1e-12)
        hand_y[i], hand_dy[i], hand_dc[i], hand_ci[i] = y, y - x, ci_new - c_is[i], ci_new
    hand_x = x + eta_g * torch.stack([hand_dy[i] for i in S]).mean(0)
    hand_c = c + len(S) / n * torch.stack([hand_dc[i] for i in S]).mean(0)

    # With glassbox's functions and callback.
    dys, dcs = [], []
    for i in S:
        y = local_steps_via_callback({"w": x}, A[i], b[i], {"w": c}, {"w": c_is[i]}, steps, lr)
        dy, dc, ci_new = scaffold_client_update({"w": x}, y, {"w": c}, {"w": c_is[i]}, steps, lr)
        for got, want in ((y, hand_y), (dy, hand_dy), (dc, hand_dc), (ci_new, hand_ci)):
            assert got["w"].dtype == f64
            torch.testing.assert_close(got["w"], want[i], rtol=0, atol=1e-12)
        dys.append(dy)
        dcs.append(dc)
    x_new, c_new = scaffold_server_update({"w": x}, {"w": c}, dys, dcs, n_total_clients=n, server_lr=eta_g)
    torch.testing.assert_close(x_new["w"], hand_x, rtol=0, atol=1e-12)
    torch.testing.assert_close(c_new["w"], hand_c, rtol=0, atol=1e-12)
    # c stays the mean of all clients' c_i (client 1's unchanged).
    all_ci = [hand_ci.get(i, c_is[i]) for i in range(n)]
    torch.testing.assert_close(c_new["w"], torch.stack(all_ci).mean(0), rtol=0, atol=1e-12)


def test_scaffold_per_step_learning_rates_are_summed():
    x = {"w": torch.zeros(2, dtype=f64)}
    y = {"w": torch.tensor([-0.3, 0.6], dtype=f64)}
    _, _, a = scaffold_client_update(x, y, x, None, 3, [0.1, 0.1, 0.1])
    _, _, b = scaffold_client_update(x, y, x, None, 3, 0.1)
    torch.testing.assert_close(a["w"], b["w"], rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="2 learning rates given for 3"):
        scaffold_client_update(x, y, x, None, 3, [0.1, 0.1])


def run_federated(A, b, rounds, steps, lr, scaffold: bool):
    n = len(A)
    x = {"w": torch.zeros(3, dtype=f64)}
    c = {"w": torch.zeros(3, dtype=f64)}
    c_is = [{"w": torch.zeros(3, dtype=f64)} for _ in range(n)]
    for _ in range(rounds):
        if scaffold:
            dys, dcs = [], []
            for i in range(n):
                y = local_steps_via_callback(x, A[i], b[i], c, c_is[i], steps, lr)
                dy, dc, c_is[i] = scaffold_client_update(x, y, c, c_is[i], steps, lr)
                dys.append(dy)
                dcs.append(dc)
            x, c = scaffold_server_update(x, c, dys, dcs, n_total_clients=n)
        else:
            x = fedavg([fedavg_local_steps(x, A[i], b[i], steps, lr) for i in range(n)])
    return x["w"]


def test_scaffold_converges_to_the_optimum_where_fedavg_drifts():
    A, b, w_star = quadratic()
    rounds, steps, lr = 40, 10, 0.05
    w_scaffold = run_federated(A, b, rounds, steps, lr, scaffold=True)
    w_fedavg = run_federated(A, b, rounds, steps, lr, scaffold=False)
    err_scaffold = float((w_scaffold - w_star).norm())
    err_fedavg = float((w_fedavg - w_star).norm())
    # FedAvg's fixed point, in closed form: each client maps x to b_i + (I - lr A_i)^K (x - b_i), so
    # the average is stationary where sum_i M_i (x - b_i) = 0 with M_i = I - (I - lr A_i)^K.
    eye = torch.eye(3, dtype=f64)
    M = [eye - torch.linalg.matrix_power(eye - lr * a, steps) for a in A]
    w_drift = torch.linalg.solve(sum(M), sum(m @ bi for m, bi in zip(M, b, strict=True)))
    print(
        f"after {rounds} rounds of {steps} local steps: |w - w*| SCAFFOLD {err_scaffold:.2e}, "
        f"FedAvg {err_fedavg:.2e} (its drifted fixed point is {float((w_drift - w_star).norm()):.2e} away)"
    )
    assert err_scaffold < 1e-6
    assert err_fedavg > 1e-2  # client drift: FedAvg settles elsewhere ...
    assert float((w_fedavg - w_drift).norm()) < 1e-6  # ... exactly where the theory says


def test_scaffold_callback_through_the_real_trainer():
    """The Trainer with ScaffoldCorrection takes exactly y <- y - lr (g + c - c_i) on iris's batches."""
    tr, _, _ = split_dataset(load_dataset("iris"), 0.2, 0.2, seed=0)
    cfg = TrainConfig(
        epochs=1, batch_size=16, optimizer="sgd", lr=0.05, momentum=0.0, weight_decay=0.0,
        grad_clip=None, warmup=0.0, schedule="constant", patience=None, max_steps_per_epoch=4,
    )  # fmt: skip
    check_scaffold_config(cfg)
    torch.manual_seed(0)
    model = build_model(ModelConfig(dim=8, depth=1, heads=2, dropout=0.0), tr)
    x = {k: v.detach().clone() for k, v in model.state_dict().items()}
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(2)
    c = {n: 0.1 * torch.randn(x[n].shape, generator=g) for n in names}
    c_i = {n: 0.1 * torch.randn(x[n].shape, generator=g) for n in names}

    trainer = Trainer(model, cfg, callbacks=[ScaffoldCorrection(c, c_i)], seed=3).fit(tr)
    y = {k: v.detach().clone() for k, v in model.state_dict().items()}
    steps = trainer.global_step_
    assert steps == 4

    # The same steps by hand, on the Trainer's own batches.
    ref = build_model(ModelConfig(dim=8, depth=1, heads=2, dropout=0.0), tr)
    ref.load_state_dict(x)
    ref.train()
    params = dict(ref.named_parameters())
    for idx in list(trainer.iter_batches(tr, epoch=1))[:steps]:
        ref.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(ref(tr.X[idx]), tr.y[idx]).backward()
        with torch.no_grad():
            for n in names:
                params[n] -= cfg.lr * (params[n].grad + c[n] - c_i[n])
    for k in y:
        torch.testing.assert_close(y[k], ref.state_dict()[k], rtol=0, atol=1e-6)

    lrs = [r["lr"] for r in trainer.history_ if "lr" in r]
    delta_y, delta_c, c_new = scaffold_client_update(x, y, c, c_i, steps, lrs)
    assert set(delta_y) == set(x) and set(c_new) == set(names)
    for n in names:
        torch.testing.assert_close(c_new[n], c_i[n] - c[n] + (x[n] - y[n]) / (steps * cfg.lr))
        torch.testing.assert_close(delta_c[n], c_new[n] - c_i[n])


def test_scaffold_correction_names_missing_parameters():
    model = Point(torch.zeros(2))
    with pytest.raises(ValueError, match="no entry for trainable parameters: w"):
        ScaffoldCorrection({"v": torch.zeros(2)}).on_fit_start(SimpleNamespace(model=model))


# -- FedProx ---------------------------------------------------------------------------------------------


def test_proximal_term_gradient_equals_autograd_of_the_penalized_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2))
    w0 = {k: v + 0.3 * torch.randn_like(v) for k, v in model.state_dict().items()}
    X, yb, mu = torch.randn(8, 4), torch.randint(0, 2, (8,)), 0.7

    def loss_fn():
        return nn.functional.cross_entropy(model(X), yb)

    prox = {"_module." + k: v for k, v in w0.items()}  # an Opacus-style global state works too
    cb = ProximalTerm(mu, prox)
    stub = SimpleNamespace(model=model)
    cb.on_fit_start(stub)
    with torch.no_grad():
        for v in w0.values():
            v.add_(1.0)  # the callback copied the global state: later edits don't reach it
    w0 = {k: v - 1.0 for k, v in w0.items()}
    model.zero_grad()
    loss_fn().backward()
    cb.on_after_backward(stub, None)
    got = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    penalty = sum((p - w0[n]).pow(2).sum() for n, p in model.named_parameters())
    (loss_fn() + mu / 2 * penalty).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-6, atol=1e-7)


def test_proximal_term_reaches_parameters_without_gradient():
    model = Point(torch.ones(2))
    cb = ProximalTerm(2.0, {"w": torch.zeros(2)})
    cb.on_after_backward(SimpleNamespace(model=model), None)  # no backward at all: grad is None
    torch.testing.assert_close(model.w.grad, torch.full((2,), 2.0))
    with pytest.raises(ValueError, match="mu must be >= 0"):
        ProximalTerm(-1.0, {})


# -- aggregation references ------------------------------------------------------------------------------


def test_fedavg_weights():
    s = [
        {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor(3.0)},
        {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor(-1.0)},
    ]
    out = fedavg(s, weights=[1, 3])
    torch.testing.assert_close(out["w"], torch.tensor([2.5, 5.0]))
    torch.testing.assert_close(out["b"], torch.tensor(0.0))
    assert out["w"].dtype == torch.float32
    torch.testing.assert_close(fedavg(s)["w"], torch.tensor([2.0, 4.0]))
    # float64 accumulation: a float32 mean of many small values against a large one keeps them.
    many = [{"w": torch.tensor([1e8])}] + [{"w": torch.tensor([1.0])}] * 9
    assert float(fedavg(many)["w"]) == pytest.approx((1e8 + 9) / 10, abs=0.5)
    with pytest.raises(ValueError, match="non-negative weights"):
        fedavg(s, weights=[1, -1])
    with pytest.raises(ValueError, match="different keys"):
        fedavg([s[0], {"w": s[1]["w"]}])


def brute_force_krum_scores(X: np.ndarray, f: int) -> np.ndarray:
    n = len(X)
    k = max(1, n - f - 2)
    scores = []
    for i in range(n):
        d = sorted(float(((X[i] - X[j]) ** 2).sum()) for j in range(n) if j != i)
        scores.append(sum(d[:k]))
    return np.array(scores)


def test_krum_picks_honest_updates_and_matches_brute_force():
    g = np.random.default_rng(0)
    honest = g.normal(0.0, 0.1, size=(7, 6)) + 1.0
    attackers = np.stack([np.full(6, 40.0), -30.0 * np.ones(6), g.normal(0, 20, size=6)])
    X = np.concatenate([honest, attackers])
    f = len(attackers)
    updates = [torch.tensor(row) for row in X]
    scores = brute_force_krum_scores(X, f)
    chosen = krum_select(updates, f=f)
    assert chosen == [int(np.argmin(scores))] and chosen[0] < 7
    torch.testing.assert_close(krum(updates, f=f), updates[chosen[0]])
    best3 = krum_select(updates, f=f, m=3)
    assert best3 == list(np.argsort(scores, kind="stable")[:3]) and max(best3) < 7
    torch.testing.assert_close(krum(updates, f=f, m=3), torch.tensor(X[best3].mean(0)))
    w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    want = (X[best3] * np.array(w)[best3, None]).sum(0) / np.array(w)[best3].sum()
    torch.testing.assert_close(krum(updates, f=f, m=3, weights=w), torch.tensor(want))
    # State dicts give the same choice and come back as state dicts.
    states = [{"a": torch.tensor(r[:2]).reshape(1, 2), "b": torch.tensor(r[2:])} for r in X]
    assert krum_select(states, f=f, m=3) == best3
    out = krum(states, f=f)
    assert out["a"].shape == (1, 2)
    torch.testing.assert_close(out["b"], states[chosen[0]]["b"])


@pytest.mark.parametrize("n", [5, 6])
def test_trimmed_mean_and_median_against_numpy(n):
    g = np.random.default_rng(n)
    X = g.normal(size=(n, 4, 3))
    X[0] = 1e6  # an outlier the robust rules must ignore
    updates = [{"w": torch.tensor(x)} for x in X]
    for beta in (0.0, 0.2, 0.4):
        cut = int(beta * n)
        want = np.sort(X, axis=0)[cut : n - cut].mean(axis=0)
        np.testing.assert_allclose(trimmed_mean(updates, beta)["w"].numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(coordinate_median(updates)["w"].numpy(), np.median(X, axis=0), rtol=1e-12)
    flat = [torch.tensor(x.reshape(-1)) for x in X]
    np.testing.assert_allclose(coordinate_median(flat).numpy(), np.median(X.reshape(n, -1), axis=0))
    with pytest.raises(ValueError, match="nothing would be left"):
        trimmed_mean(updates, 0.6)


# -- configuration ---------------------------------------------------------------------------------------


def test_check_scaffold_config_refuses_what_breaks_option_ii():
    fix = "train.optimizer=sgd train.momentum=0 train.weight_decay=0"
    plain = dict(optimizer="sgd", momentum=0.0, weight_decay=0.0, grad_clip=None)
    check_scaffold_config(TrainConfig(**plain))
    check_scaffold_config(TrainConfig(**plain, schedule="cosine", warmup=0.1))  # schedules are fine
    cases = {
        "optimizer=adamw": dict(plain, optimizer="adamw"),
        "momentum=0.9": dict(plain, momentum=0.9),
        "weight_decay=0.01": dict(plain, weight_decay=0.01),
        "grad_clip=1.0": dict(plain, grad_clip=1.0),
    }
    for what, kw in cases.items():
        with pytest.raises(UserError) as err:
            check_scaffold_config(TrainConfig(**kw))
        msg = str(err.value)
        assert f"train.{what}" in msg and fix in msg and "\n" not in msg
    with pytest.raises(UserError, match=r"train.grad_clip=null"):
        check_scaffold_config(TrainConfig())  # the defaults (AdamW, clipping) are refused
