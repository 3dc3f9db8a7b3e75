"""Static 8-bit activations: QuantizeLinear/DequantizeLinear on the input of every quantized MatMul/Gemm.

Ranges are calibrated on the caller's training texts with onnxruntime's own calibrators (min/max or
percentile), run on the weight-quantized graph, so the ranges are those of the activations the device sees.
Scales and zero points come from onnxruntime's `compute_scale_zp` (the range always includes 0). One
per-tensor Q/DQ pair serves every quantized consumer of a tensor (query, key and value share one); other
consumers (the residual Add) keep the float tensor. uint8 activations are onnxruntime's CPU default for
static QDQ (docs/onnxruntime.md: s8 weights per-channel + u8 activations).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator
from onnxruntime.quantization.quant_utils import compute_scale_zp

from toolchain.errors import EdgeqError
from toolchain.exporters.weight_sites import WeightSite
from toolchain.quant.containers import Container

ACTIVATION_CONTAINER = Container.UINT8  # onnxruntime's CPU default for static QDQ activations


class Calibration(StrEnum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"  # 99.999th percentile of |x| histogram (onnxruntime's default percentile)


_ORT_METHOD = {
    Calibration.MINMAX: CalibrationMethod.MinMax,
    Calibration.PERCENTILE: CalibrationMethod.Percentile,
}


@dataclass(frozen=True)
class ActivationQParams:
    """Per-tensor quantization of one activation: x ~= scale * (q - zero_point), q in `container`."""

    tensor: str
    scale: float
    zero_point: int
    container: Container

    def to_dict(self) -> dict:
        return asdict(self)


class _Feeds(CalibrationDataReader):
    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]):
        self._it = iter(feeds)

    def get_next(self) -> dict | None:
        return next(self._it, None)


def activation_inputs(sites: dict[str, WeightSite], graph: onnx.GraphProto) -> dict[str, str]:
    """layer -> name of the activation tensor its MatMul/Gemm multiplies with the weight."""
    by_name = {n.name: n for n in graph.node}
    return {layer: by_name[site.node].input[0] for layer, site in sites.items()}


def calibrate_ranges(
    model: onnx.ModelProto, tensors: set[str], feeds: Iterable[dict[str, np.ndarray]], method: Calibration
) -> dict[str, tuple[float, float]]:
    """(min, max) of each tensor over the calibration feeds, by onnxruntime's calibrator."""
    with tempfile.TemporaryDirectory(prefix="edgeq-calib-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(model, path)
        calibrator = create_calibrator(
            path,
            ["MatMul", "Gemm"],
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_ORT_METHOD[method],
        )
        calibrator.collect_data(_Feeds(feeds))
        data = calibrator.compute_data()
    missing = sorted(t for t in tensors if t not in data.data)
    if missing:
        raise EdgeqError(f"export: calibration: no range collected for {missing[:3]}")
    ranges = {t: data[t].range_value for t in tensors}  # arrays of shape () or (1,)
    return {t: (float(np.min(lo)), float(np.max(hi))) for t, (lo, hi) in ranges.items()}


def qparams_for(tensor: str, lo: float, hi: float, container: Container) -> ActivationQParams:
    """Asymmetric per-tensor scale and zero point covering [min(lo, 0), max(hi, 0)]."""
    dtype = np.int8 if container.signed else np.uint8
    qmin, qmax = (np.array(v, dtype=dtype) for v in container.value_range)
    zp, scale = compute_scale_zp(np.float32(lo), np.float32(hi), qmin, qmax, symmetric=False)
    return ActivationQParams(tensor, float(np.float32(scale)), int(zp), container)


def insert_activation_qdq(
    model: onnx.ModelProto, sites: dict[str, WeightSite], qparams: dict[str, ActivationQParams]
) -> None:
    """One QuantizeLinear -> DequantizeLinear pair per activation tensor, feeding only the layers' nodes."""
    graph = model.graph
    inputs = activation_inputs(sites, graph)
    new_nodes, new_inits, renamed = [], [], {}
    for tensor in sorted(set(inputs.values())):
        qp = qparams[tensor]
        prefix = f"{tensor}/act"
        new_inits += [
            helper.make_tensor(f"{prefix}.scale", TensorProto.FLOAT, [], [qp.scale]),
            helper.make_tensor(f"{prefix}.zero_point", qp.container.onnx_type, [], [qp.zero_point]),
        ]
        q_in = [tensor, f"{prefix}.scale", f"{prefix}.zero_point"]
        new_nodes += [
            helper.make_node("QuantizeLinear", q_in, [f"{prefix}_q"], name=f"{prefix}/QuantizeLinear"),
            helper.make_node(
                "DequantizeLinear",
                [f"{prefix}_q", *q_in[1:]],
                [f"{prefix}_dq"],
                name=f"{prefix}/DequantizeLinear",
            ),
        ]
        renamed[tensor] = f"{prefix}_dq"
    consumers = {site.node for site in sites.values()}
    for node in graph.node:
        if node.name in consumers:
            node.input[0] = renamed[node.input[0]]
    _insert_after_producers(graph, new_nodes)
    graph.initializer.extend(new_inits)


def _insert_after_producers(graph: onnx.GraphProto, new_nodes: list[onnx.NodeProto]) -> None:
    """Insert each Q/DQ pair right after its input's producer, keeping the graph topologically sorted."""
    after: dict[str, list[onnx.NodeProto]] = {}
    for i in range(0, len(new_nodes), 2):
        after.setdefault(new_nodes[i].input[0], []).extend(new_nodes[i : i + 2])
    nodes = [n for graph_input in graph.input for n in after.pop(graph_input.name, [])]
    for node in graph.node:
        nodes.append(node)
        for out in node.output:
            nodes.extend(after.pop(out, []))
    if after:
        raise EdgeqError(f"export: activation QDQ: no producer for {sorted(after)[:3]}")
    del graph.node[:]
    graph.node.extend(nodes)
