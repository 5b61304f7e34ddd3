"""The quantum head against a numpy state-vector simulator, its gradients, and life without PennyLane."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from glassbox.config import ModelConfig, TrainConfig
from glassbox.data.base import Dataset
from glassbox.errors import UserError
from glassbox.nn import build_model, load_model, save_model
from glassbox.nn.quantum import ClassicalHead, circuit_parameters
from glassbox.train import Trainer

CFG = ModelConfig(dim=16, depth=1, heads=2, dropout=0.0, qubits=2, quantum_layers=1)


def _tabular(n: int = 48, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=g)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long()  # learnable in a few steps
    return Dataset(
        "toy", "tabular", "classification", X, y, feature_names=["a", "b", "c"], classes=["n", "y"]
    )


def _text() -> Dataset:
    X = torch.randint(0, 256, (4, 9), generator=torch.Generator().manual_seed(0))
    return Dataset("toy-text", "text", "lm", X, torch.zeros(4, dtype=torch.long))


# -- a reference simulator: PennyLane's gate definitions, wire 0 the most significant bit --------
def _rx(t: float) -> np.ndarray:
    c, s = math.cos(t / 2), math.sin(t / 2)
    return np.array([[c, -1j * s], [-1j * s, c]])


def _ry(t: float) -> np.ndarray:
    c, s = math.cos(t / 2), math.sin(t / 2)
    return np.array([[c, -s], [s, c]], dtype=complex)


def _rz(t: float) -> np.ndarray:
    return np.diag([np.exp(-0.5j * t), np.exp(0.5j * t)])


def _on(gate: np.ndarray, wire: int, n: int) -> np.ndarray:
    out = np.array([[1.0 + 0j]])
    for w in range(n):
        out = np.kron(out, gate if w == wire else np.eye(2))
    return out


def _cnot(control: int, target: int, n: int) -> np.ndarray:
    dim = 2**n
    m = np.zeros((dim, dim), dtype=complex)
    for i in range(dim):
        bits = [(i >> (n - 1 - w)) & 1 for w in range(n)]
        if bits[control]:
            bits[target] ^= 1
        j = sum(b << (n - 1 - w) for w, b in enumerate(bits))
        m[j, i] = 1
    return m


def _reference(angles: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """<Z_w> after RX(angles) and StronglyEntanglingLayers(weights), as PennyLane defines them."""
    n = len(angles)
    psi = np.zeros(2**n, dtype=complex)
    psi[0] = 1
    for w, t in enumerate(angles):
        psi = _on(_rx(t), w, n) @ psi
    for layer, rows in enumerate(weights):
        for w, (phi, theta, omega) in enumerate(rows):
            psi = _on(_rz(omega) @ _ry(theta) @ _rz(phi), w, n) @ psi  # Rot(phi, theta, omega)
        if n > 1:
            r = layer % (n - 1) + 1  # the default ranges
            for w in range(n):
                psi = _cnot(w, (w + r) % n, n) @ psi
    z = np.diag([1.0, -1.0])
    return np.array([np.real(psi.conj() @ _on(z, w, n) @ psi) for w in range(n)])


def test_reference_simulator_knows_the_textbook_cases() -> None:
    # RX(t)|0> gives <Z> = cos t; with zero rotations a layer is CNOT(0, 1) then CNOT(1, 0),
    # which takes |10> to |11> and then to |01>.
    np.testing.assert_allclose(_reference(np.array([0.7]), np.zeros((1, 1, 3))), [math.cos(0.7)], atol=1e-12)
    np.testing.assert_allclose(_reference(np.array([math.pi, 0.0]), np.zeros((1, 2, 3))), [1, -1], atol=1e-12)


@pytest.mark.parametrize(("qubits", "layers"), [(1, 1), (1, 2), (2, 1), (2, 3)])
def test_circuit_matches_a_state_vector_simulation(qubits: int, layers: int) -> None:
    pytest.importorskip("pennylane")
    from glassbox.nn.quantum import QuantumHead

    head = QuantumHead(3, 2, qubits=qubits, layers=layers).double()
    g = torch.Generator().manual_seed(qubits * 10 + layers)
    weights = torch.rand(layers, qubits, 3, generator=g, dtype=torch.float64) * 2 * math.pi
    with torch.no_grad():
        head.circuit.weights.copy_(weights)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        angles = head.angles(x)
        got = head.features(x)
        logits = head(x)
    want = np.stack([_reference(a, weights.numpy()) for a in angles.numpy()])
    np.testing.assert_allclose(got.numpy(), want, atol=1e-10)
    w, b = head.out.weight.detach().numpy(), head.out.bias.detach().numpy()
    np.testing.assert_allclose(logits.numpy(), want @ w.T + b, atol=1e-10)
    assert head.circuit.weights.numel() == circuit_parameters(qubits, layers)


def test_gradients_reach_the_circuit_and_the_input_layer() -> None:
    pytest.importorskip("pennylane")
    from glassbox.nn.quantum import QuantumHead

    torch.manual_seed(0)
    head = QuantumHead(6, 3, qubits=3, layers=2)
    loss = torch.nn.functional.cross_entropy(head(torch.randn(8, 6)), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    loss.backward()
    for name in ("circuit.weights", "encode.linear.weight", "encode.linear.bias", "out.weight"):
        grad = dict(head.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", ["quantum", "classical"])
def test_angles_stay_in_zero_to_pi(kind: str) -> None:
    if kind == "quantum":
        pytest.importorskip("pennylane")
        from glassbox.nn.quantum import QuantumHead as Head
    else:
        Head = ClassicalHead
    torch.manual_seed(0)
    head = Head(4, 2, qubits=3, layers=1)
    x = torch.cat([torch.randn(64, 4), 1e4 * torch.randn(64, 4)])  # the large ones saturate the sigmoid
    a = head.angles(x)
    assert a.min() >= 0 and a.max() <= math.pi
    assert a.min() < 0.01 and a.max() > math.pi - 0.01  # both ends are reachable
    assert (head.features(x).abs() <= 1).all()


def test_classical_head_is_the_circuits_size() -> None:
    for qubits, layers in [(1, 1), (2, 1), (4, 2), (8, 3), (12, 2)]:
        head = ClassicalHead(5, 2, qubits=qubits, layers=layers)
        middle = sum(p.numel() for p in head.mix.parameters())
        assert abs(middle - circuit_parameters(qubits, layers)) <= 2 * qubits + 1  # one hidden unit's worth
    assert sum(p.numel() for p in ClassicalHead(5, 2, 4, 2).mix.parameters()) == 22  # the circuit has 24


@pytest.mark.parametrize("head", ["quantum", "classical_small"])
def test_a_model_with_the_head_trains_saves_and_loads(head: str, tmp_path) -> None:
    if head == "quantum":
        pytest.importorskip("pennylane")
    torch.manual_seed(0)
    data = _tabular()
    model = build_model(CFG.model_copy(update={"head": head}), data)
    assert type(model.head).__name__ == ("QuantumHead" if head == "quantum" else "ClassicalHead")
    before = {k: v.clone() for k, v in model.head.state_dict().items()}
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.02, warmup=0.0, patience=None, threads=1)
    trainer = Trainer(model, cfg, seed=0).fit(data, data)
    losses = [r["train_loss"] for r in trainer.history_ if "train_loss" in r]
    assert len(losses) == 9 and all(math.isfinite(v) for v in losses)
    after = model.head.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before), "every head tensor should move"
    assert trainer.evaluate(data)["accuracy"] > 0.5
    loaded = load_model(save_model(model, tmp_path / "m"))
    assert loaded.spec_["model"]["head"] == head
    torch.testing.assert_close(loaded(data.X[:4]), model.eval()(data.X[:4]))


@pytest.mark.parametrize("head", ["quantum", "classical_small"])
def test_language_models_refuse_a_non_linear_head(head: str) -> None:
    with pytest.raises(UserError, match=rf"model\.head={head} is a classifier head.*model\.head=linear"):
        build_model(CFG.model_copy(update={"head": head}), _text())


def test_recipe_keys_are_validated() -> None:
    with pytest.raises(ValueError, match="qubits"):
        ModelConfig(qubits=13)
    with pytest.raises(ValueError, match="head"):
        ModelConfig(head="qnn")  # type: ignore[arg-type]


_WITHOUT_PENNYLANE = r"""
import json, sys
sys.modules["pennylane"] = None  # what an install without the extra looks like to import
import torch
import glassbox
from glassbox.config import ModelConfig
from glassbox.data.base import Dataset
from glassbox.errors import UserError
from glassbox.nn import build_model

X, y = torch.randn(8, 3), torch.tensor([0, 1] * 4)
data = Dataset("toy", "tabular", "classification", X, y, feature_names=["a", "b", "c"], classes=["n", "y"])
cfg = ModelConfig(dim=16, depth=1, heads=2)
out = {"linear": list(build_model(cfg, data)(X[:2]).shape)}
small = build_model(cfg.model_copy(update={"head": "classical_small"}), data)
out["classical_small"] = list(small(X[:2]).shape)
try:
    build_model(cfg.model_copy(update={"head": "quantum"}), data)
except UserError as err:
    out["error"] = str(err)
from glassbox.cli.main import main
out["help"] = main(["--help"])
recipe = sys.argv[1] + "/r.yaml"
open(recipe, "w").write("data:\n  source: iris\nmodel:\n  head: quantum\n")
out["train"] = main(["train", recipe, "--out", sys.argv[1]])
print(json.dumps(out))
"""


def test_without_pennylane_everything_else_works_and_quantum_says_how_to_install(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PENNYLANE, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["linear"] == [2, 2] and out["classical_small"] == [2, 2]
    assert "PennyLane" in out["error"] and "pip install -c constraints.txt -e '.[quantum]'" in out["error"]
    assert "\n" not in out["error"]
    assert out["help"] == 0 and out["train"] == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {out['error']}"]
    assert "Traceback" not in proc.stderr


def test_benchmark_quick_reports_both_heads_side_by_side() -> None:
    pytest.importorskip("pennylane")
    from glassbox.cli.bench import load_benchmark

    res = load_benchmark("quantum").main(["--quick", "--heads", "quantum,classical_small"])
    assert res["settings"]["quick"] and res["settings"]["seeds"] == [0]
    for setting in ("transformer", "head_alone"):
        q, c = res["results"][setting]["quantum"], res["results"][setting]["classical_small"]
        assert abs(q["head_params"] - c["head_params"]) <= 2 * res["settings"]["qubits"] + 1
        for row in (q, c):
            assert 0 <= row["accuracy"]["mean"] <= 1 and 0 <= row["auroc"]["mean"] <= 1
            assert row["seconds_per_epoch"]["mean"] > 0
    assert res["results"]["head_alone"]["quantum"]["params"] == 54  # 4*4+4 in, 2*4*3 circuit, 4*2+2 out
