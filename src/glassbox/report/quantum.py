"""The "Quantum head" report section: the quantum head beside its classical twin of the same size.

>>> s = twin_section({"quantum": {"test": {"accuracy": 0.93, "loss": 0.2}, "head_parameters": 294,
...                               "best_epoch": 5, "qubits": 4, "layers": 2},
...                   "classical_small": {"test": {"accuracy": 0.92, "loss": 0.25}, "head_parameters": 292,
...                                       "best_epoch": 3, "train_seconds": 2.0}})
>>> s["title"], "0.930" in s["html"]
('Quantum head beside a classical head', True)
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any


def twin_section(twin: Mapping[str, Any]) -> dict[str, str]:
    q, c = twin["quantum"], twin["classical_small"]
    metrics = [k for k in q["test"] if k in c["test"]]
    head = "".join(f"<th>test {escape(k)}</th>" for k in metrics)
    rows = []
    for name, r in (("quantum (simulated circuit)", q), ("classical, same size", c)):
        cells = "".join(f"<td>{float(r['test'][k]):.3f}</td>" for k in metrics)
        tail = f"<td>{r['head_parameters']}</td><td>{r['best_epoch']}</td>"
        rows.append(f"<tr><td>{escape(name)}</td>{cells}{tail}</tr>")
    html = (
        f"<p>A variational circuit of {q.get('qubits')} qubits and {q.get('layers')} entangling layers"
        " (PennyLane, default.qubit, exact simulation) as the classifier head, and the same recipe"
        " trained again with a classical head of the same shape and about as many parameters"
        " (model.head: classical_small), on the same rows and seed. A quantum head is simulated here:"
        " it shows what such a circuit can represent, not a speed-up.</p>"
        f"<table><tr><th>head</th>{head}<th>head parameters</th><th>best epoch</th></tr>"
        f"{''.join(rows)}</table>"
    )
    return {"title": "Quantum head beside a classical head", "html": html}
