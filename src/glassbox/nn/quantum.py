"""A variational quantum circuit as a classifier head, and its classical counterpart.

``QuantumHead`` maps features to ``qubits`` angles, runs them through a
simulated circuit (PennyLane's ``default.qubit``, differentiated by
backpropagation, so it trains with any torch optimizer) and reads one
expectation value per qubit into a linear layer. ``ClassicalHead`` has the
same input and output layers with a small MLP of about as many parameters in
place of the circuit: report the two side by side, since whatever the circuit
gains must be measured against a classical layer of its size.

PennyLane is an optional extra (``pip install -c constraints.txt -e '.[quantum]'``);
it is imported only when a ``QuantumHead`` is built.

>>> import torch
>>> head = ClassicalHead(16, 3, qubits=4, layers=2)
>>> head(torch.randn(5, 16)).shape
torch.Size([5, 3])
>>> angles = head.angles(100 * torch.randn(5, 16))
>>> bool(angles.min() >= 0 and angles.max() <= torch.pi)
True
>>> qhead = QuantumHead(16, 3, qubits=4, layers=2)  # doctest: +SKIP
>>> qhead(torch.randn(5, 16)).shape  # doctest: +SKIP
torch.Size([5, 3])
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from glassbox.errors import UserError

INSTALL = "pip install -c constraints.txt -e '.[quantum]'"


def _pennylane() -> Any:
    try:
        import pennylane as qml
    except ImportError:
        raise UserError(
            f"the quantum head (model.head: quantum) needs PennyLane, which is not installed; run {INSTALL}"
        ) from None
    return qml


def circuit_parameters(qubits: int, layers: int) -> int:
    """Trainable angles of the circuit: StronglyEntanglingLayers has three rotations per qubit and layer."""
    return 3 * qubits * layers


class _Angles(nn.Module):
    """Linear(dim_in -> qubits) squashed to [0, pi].

    [0, pi] rather than [-pi, pi]: after RX(t) on |0>, <Z> = cos(t) is even in
    t, so a wider range folds x and -x onto the same state and the sign is lost
    (76 % against 93 % accuracy in a check on a toy task).
    """

    def __init__(self, dim_in: int, qubits: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, qubits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return math.pi * torch.sigmoid(self.linear(x))


class QuantumHead(nn.Module):
    """Linear -> angles in [0, pi] -> RX embedding, StronglyEntanglingLayers -> <Z> per qubit -> Linear.

    ``forward(x)`` takes ``(B, dim_in)`` and gives ``(B, n_classes)`` logits.
    The circuit's weights (``circuit.weights``, shape ``(layers, qubits, 3)``)
    start uniform in [0, 2 pi] from torch's generator, so ``torch.manual_seed``
    makes a head reproducible. Simulation cost grows as ``2 ** qubits``.
    """

    def __init__(self, dim_in: int, n_classes: int, qubits: int = 4, layers: int = 2) -> None:
        super().__init__()
        qml = _pennylane()
        if qubits < 1 or layers < 1:
            raise UserError(f"QuantumHead needs qubits >= 1 and layers >= 1, got {qubits} and {layers}")
        self.qubits, self.layers = qubits, layers
        self.encode = _Angles(dim_in, qubits)
        wires = list(range(qubits))
        device = qml.device("default.qubit", wires=qubits)

        # backprop: the simulator is written in torch, so gradients come with the
        # forward pass; parameter shift would cost two circuit runs per weight.
        @qml.qnode(device, interface="torch", diff_method="backprop")
        def circuit(inputs: torch.Tensor, weights: torch.Tensor) -> list[Any]:
            qml.AngleEmbedding(inputs, wires=wires, rotation="X")
            qml.StronglyEntanglingLayers(weights, wires=wires)
            return [qml.expval(qml.PauliZ(w)) for w in wires]

        shape = qml.StronglyEntanglingLayers.shape(n_layers=layers, n_wires=qubits)
        self.circuit = qml.qnn.TorchLayer(circuit, {"weights": shape})
        self.out = nn.Linear(qubits, n_classes)

    def angles(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding angles ``(B, qubits)``, each in [0, pi]."""
        return self.encode(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The circuit's outputs ``(B, qubits)``: <Z> on each qubit, in [-1, 1]."""
        return self.circuit(self.angles(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))


class ClassicalHead(nn.Module):
    """``QuantumHead`` with the circuit replaced by ``Linear(qubits, h), tanh, Linear(h, qubits), tanh``.

    The same input layer, squashing to [0, pi] and output layer; the final
    tanh bounds the features to [-1, 1] as <Z> is. ``hidden`` (``h``) defaults
    to the width whose parameter count is nearest the circuit's
    ``3 * qubits * layers`` (22 against 24 at 4 qubits, 2 layers), so a
    comparison is at matched size.
    """

    def __init__(
        self, dim_in: int, n_classes: int, qubits: int = 4, layers: int = 2, hidden: int | None = None
    ) -> None:
        super().__init__()
        if qubits < 1 or layers < 1:
            raise UserError(f"ClassicalHead needs qubits >= 1 and layers >= 1, got {qubits} and {layers}")
        if hidden is None:
            # h (2 qubits + 1) + qubits parameters, solved for the circuit's count.
            hidden = max(1, round((circuit_parameters(qubits, layers) - qubits) / (2 * qubits + 1)))
        self.qubits, self.layers, self.hidden = qubits, layers, hidden
        self.encode = _Angles(dim_in, qubits)
        self.mix = nn.Sequential(nn.Linear(qubits, hidden), nn.Tanh(), nn.Linear(hidden, qubits), nn.Tanh())
        self.out = nn.Linear(qubits, n_classes)

    def angles(self, x: torch.Tensor) -> torch.Tensor:
        """The squashed inputs ``(B, qubits)``, each in [0, pi]."""
        return self.encode(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The middle layer's outputs ``(B, qubits)``, in [-1, 1]."""
        return self.mix(self.angles(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))
