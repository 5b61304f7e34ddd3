"""int8 ONNX models by ONNX Runtime's tools: dynamic for transformers, static QDQ for conv stems.

Which one, and why:

- **dynamic** (``quantize_dynamic``): weights of MatMul and Gemm become int8,
  one scale per output channel; activations are quantized on the fly per
  call, so no calibration data is needed and nothing about the input
  distribution is frozen into the model. Right for the transformer's linear
  layers, where the weights dominate the bytes and the time.
- **static QDQ** (``quantize_static``): for a convolutional stem the
  convolutions' activations need fixed scales, found by running a
  calibration reader over training rows; QuantizeLinear/DequantizeLinear
  pairs around Conv, MatMul and Gemm let ORT fuse them into integer kernels.
  Other op types stay float: quantizing LayerNorm, Softmax or GELU costs
  accuracy for no size gain.

Neither touches the tokenizer's feature embeddings (a Mul and an Add, not a
MatMul), which on a table of 30 features at width 128 are a tenth of the
weights. ``quantize_weights_only`` stores those, and any other large float
constant left over, as int8 with one scale per row behind a
DequantizeLinear: weight-only int8, the form LLM runtimes use for
embeddings. It saves bytes, not time (the product stays float), and the
accuracy gate checks it like the rest. What stays float32 is small: norms,
biases, scales, and the graph itself, which is why a very small model
shrinks less than 4x.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from glassbox.nn.models import Transformer

DYNAMIC_OPS = ["MatMul", "Gemm"]
STATIC_OPS = ["Conv", "MatMul", "Gemm"]
CALIBRATION_BATCH = 32
# Float constants smaller than this stay float32: norms, biases and scales are
# a few hundred numbers each, and a DequantizeLinear node per tensor would cost
# more bytes and time than it saves.
WEIGHT_ONLY_MIN = 1024


def quantization_method(model: Transformer) -> str:
    """``static`` for an image model with a convolutional stem, else ``dynamic``."""
    spec = model.spec_
    return "static" if spec.get("kind") == "image" and spec["model"].get("conv_stem") else "dynamic"


def quantize(
    src: str | Path, dst: str | Path, *, method: str = "dynamic", calibration: np.ndarray | None = None
) -> dict[str, Any]:
    """Write the int8 version of the ONNX model ``src`` to ``dst``; returns what was done.

    ``calibration``: float32 input rows for the static method's activation ranges.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    src, dst = Path(src), Path(dst)
    # ORT logs a suggestion to pre-process on the root logger at WARNING; the
    # graph is already shape-inferred by the exporter, so it is noise here.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        if method == "dynamic":
            quantize_dynamic(
                src, dst, per_channel=True, op_types_to_quantize=DYNAMIC_OPS, weight_type=QuantType.QInt8
            )
            ops = DYNAMIC_OPS
        elif method == "static":
            if calibration is None or len(calibration) == 0:
                raise ValueError("static quantization needs calibration rows")
            quantize_static(
                src,
                dst,
                _Reader(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                op_types_to_quantize=STATIC_OPS,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
            )
            ops = STATIC_OPS
        else:
            raise ValueError(f"unknown quantization method {method!r}: dynamic or static")
    finally:
        root.setLevel(level)
    from glassbox.edge.export import slim

    weight_only = quantize_weights_only(dst)
    slim(dst)  # the quantizer writes its shape annotations back in
    return {
        "method": method,
        "op_types": ops,
        "per_channel": True,
        "weights": "int8",
        "activations": "int8, per call" if method == "dynamic" else "int8, calibrated",
        "calibration_rows": None if calibration is None or method == "dynamic" else len(calibration),
        "quantized_nodes": _count_quantized(dst),
        "weight_only": weight_only,
    }


def quantize_weights_only(path: str | Path, min_size: int = WEIGHT_ONLY_MIN) -> list[str]:
    """Store each large float32 initializer that is still float as int8 plus a per-row scale.

    Symmetric, one scale per row (axis 0; per tensor for 1-D), zero point 0,
    so the largest magnitude of a row maps to 127. The tensor's consumers now
    read a DequantizeLinear's output under the old name, so nothing else in
    the graph changes. Returns the names of the tensors converted.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(path), load_external_data=False)
    graph = m.graph
    inputs = {i.name for i in graph.input}
    done: list[str] = []
    keep = []
    new_nodes = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or init.name in inputs:
            keep.append(init)
            continue
        w = numpy_helper.to_array(init)
        if w.size < min_size or w.ndim == 0:
            keep.append(init)
            continue
        rows = w.reshape(w.shape[0], -1) if w.ndim > 1 else w.reshape(1, -1)
        peak = np.abs(rows).max(axis=1)
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)  # (rows,)
        q = np.clip(np.rint(rows / scale[:, None]), -127, 127).astype(np.int8).reshape(w.shape)
        if w.ndim == 1:
            scale = scale.reshape(())  # per tensor
        zero = np.zeros(scale.shape, dtype=np.int8)
        name = init.name
        keep += [
            numpy_helper.from_array(q, f"{name}_int8"),
            numpy_helper.from_array(scale, f"{name}_int8_scale"),
            numpy_helper.from_array(zero, f"{name}_int8_zero"),
        ]
        attrs = {"axis": 0} if w.ndim > 1 else {}
        new_nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{name}_int8", f"{name}_int8_scale", f"{name}_int8_zero"],
                [name],
                name=f"{name}_weight_only",
                **attrs,
            )
        )
        done.append(name)
    if not done:
        return done
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes + nodes)  # constants first: the graph stays topologically sorted
    onnx.save(m, str(path))
    return done


def _count_quantized(path: Path) -> int:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    integer = {"MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul"}
    return sum(n.op_type in integer or n.op_type == "DequantizeLinear" for n in m.graph.node)


class _Reader:
    """ORT's calibration reader protocol: ``get_next()`` gives one feed dict, then None."""

    def __init__(self, rows: np.ndarray, batch: int = CALIBRATION_BATCH) -> None:
        self.rows = np.ascontiguousarray(rows, dtype=np.float32)
        self.batch = batch
        self._it = self._batches()

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        from glassbox.edge.export import INPUT

        for i in range(0, len(self.rows), self.batch):
            yield {INPUT: self.rows[i : i + self.batch]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._batches()
