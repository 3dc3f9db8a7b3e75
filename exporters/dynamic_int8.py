"""Dynamic int8 activations: each quantized MatMul computes in integers, as onnxruntime's `quantize_dynamic`.

For a layer y = x @ W^T with int8 weights q (stored (in, out)) and per-output-channel scales s:

    DynamicQuantizeLinear(x) -> x_q uint8, x_scale, x_zp        (one per input tensor, shared by its layers)
    MatMulInteger(x_q, q, x_zp) -> int32 -> Cast(float) -> Mul(x_scale * s) -> y

which onnxruntime's default optimizations fuse into `com.microsoft::DynamicQuantizeMatMul` (u8 x s8 integer
GEMM). The integers are the very initializers the weight-only export wrote; only the DequantizeLinear that
fed the float MatMul goes. DynamicQuantizeLinear quantizes the whole input tensor with one asymmetric uint8
range that includes 0, computed at run time (ONNX semantics); `dynamic_fake_quantize` is the same arithmetic
in torch, for the scorer and the torch twin.

MatMulInteger reads int8 and one scale per output channel (no blocks): the profile enforces that. A layer
stored in an int4 or int2 container keeps its packed integers in the file and feeds MatMulInteger through
the widening Cast that `rewrite_weights(widen=True)` put before its DequantizeLinear (qdq_weights). A Gemm
site (a 2-D head layer) takes the same chain, its bias added after the scaling.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from toolchain.errors import EdgeqError
from toolchain.exporters.qdq_weights import int_tensor
from toolchain.exporters.weight_sites import WeightSite
from toolchain.profiles import DYNAMIC_CONTAINERS
from toolchain.quant.containers import Container

UINT8_MAX = 255


def dynamic_fake_quantize(x: torch.Tensor) -> torch.Tensor:
    """ONNX DynamicQuantizeLinear followed by its dequantization, in torch (float32).

    scale = (max(x_max, 0) - min(x_min, 0)) / 255, zero point = clamp(round(-min / scale), 0, 255), values
    clamp(round(x / scale) + zp, 0, 255); rounding half to even, as ONNX specifies.
    """
    xf = x.float()
    lo = torch.clamp(xf.min(), max=0.0)
    hi = torch.clamp(xf.max(), min=0.0)
    scale = (hi - lo) / UINT8_MAX
    if float(scale) == 0.0:
        return torch.zeros_like(xf)
    zp = torch.clamp(torch.round(-lo / scale), 0, UINT8_MAX)
    q = torch.clamp(torch.round(xf / scale) + zp, 0, UINT8_MAX)
    return ((q - zp) * scale).to(x.dtype)


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output}


def _plain_gemm(node: onnx.NodeProto) -> bool:
    """Gemm computing A @ B(^T) + C: alpha = beta = 1, A not transposed."""
    attrs = {a.name: a for a in node.attribute}
    return (
        ("alpha" not in attrs or attrs["alpha"].f == 1.0)
        and ("beta" not in attrs or attrs["beta"].f == 1.0)
        and ("transA" not in attrs or attrs["transA"].i == 0)
    )


def _weight_in_out(qweight: TensorProto, site: WeightSite, container: Container) -> None:
    """Store a layer's integers (in, out), as MatMulInteger's B input reads them, in their container."""
    if site.transposed:
        return
    q = numpy_helper.to_array(qweight).astype(np.int8)
    qweight.CopyFrom(int_tensor(qweight.name, np.ascontiguousarray(q.T), container))


def rewrite_dynamic_int8(
    model: onnx.ModelProto,
    sites: dict[str, WeightSite],
    layer_tensors: dict[str, list[str]],
    containers: dict[str, Container],
) -> None:
    """Replace DequantizeLinear -> MatMul (or Gemm, bias added after) of every site by the integer chain.

    `layer_tensors`: layer -> its [qweight, scale] initializers (rewrite_weights' result), read by the chain
    as they are (no weight zero point: MatMulInteger's default 0), so the caller's names stay valid.
    """
    graph = model.graph
    producer = _producers(graph)
    nodes_by_name = {n.name: n for n in graph.node}
    inits = {i.name: i for i in graph.initializer}
    dropped: set[int] = set()
    replacement: dict[int, list[onnx.NodeProto]] = {}  # id(matmul) -> nodes taking its place
    quantized_inputs: dict[str, tuple[str, str, str]] = {}
    order = {n.name: i for i, n in enumerate(graph.node)}
    for layer, site in sorted(sites.items(), key=lambda kv: order[kv[1].node]):  # first consumer quantizes x
        node = nodes_by_name[site.node]
        if site.op_type == "Gemm" and not _plain_gemm(node):
            raise EdgeqError(
                f"export: layer {layer!r}: int8_dynamic cannot rewrite Gemm {node.name!r} (alpha, beta or transA set)"
            )
        container = containers[layer]
        if container not in DYNAMIC_CONTAINERS:
            raise EdgeqError(
                f"export: layer {layer!r}: int8_dynamic needs a signed container "
                f"({', '.join(DYNAMIC_CONTAINERS)}), got {container}"
            )
        qweight, scale = layer_tensors[layer][:2]
        if len(layer_tensors[layer]) > 2 or len(inits[scale].dims) != 1:
            raise EdgeqError(
                f"export: layer {layer!r}: int8_dynamic needs symmetric per-channel weights "
                f"(one scale per output channel, no zero point)"
            )
        _weight_in_out(inits[qweight], site, container)
        dq = producer[site.initializer]
        b = dq.input[0]  # the integers, or their widening Cast (rewrite_weights, widen=True)
        x = node.input[0]
        nodes = []
        if x not in quantized_inputs:  # short tensor names: they are stored once per use, 38 layers each
            stem = f"dynq{len(quantized_inputs)}"
            quantized_inputs[x] = (f"{stem}.q", f"{stem}.scale", f"{stem}.zp")
            nodes.append(
                helper.make_node(
                    "DynamicQuantizeLinear", [x], list(quantized_inputs[x]), name=f"{x}/DynamicQuantizeLinear"
                )
            )
        x_q, x_scale, x_zp = quantized_inputs[x]
        bias = node.input[2] if site.op_type == "Gemm" and len(node.input) > 2 and node.input[2] else None
        t = f"mmi{len(replacement)}"
        scaled = f"{t}.y" if bias else node.output[0]
        nodes += [
            helper.make_node("MatMulInteger", [x_q, b, x_zp], [f"{t}.i32"], name=f"{layer}/MatMulInteger"),
            helper.make_node("Cast", [f"{t}.i32"], [f"{t}.acc"], name=f"{layer}/Cast", to=TensorProto.FLOAT),
            helper.make_node("Mul", [x_scale, scale], [f"{t}.scale"], name=f"{layer}/ScaleMul"),
            helper.make_node("Mul", [f"{t}.acc", f"{t}.scale"], [scaled], name=f"{layer}/Mul"),
        ]
        if bias:
            nodes.append(helper.make_node("Add", [scaled, bias], [node.output[0]], name=f"{layer}/BiasAdd"))
        replacement[id(node)] = nodes
        dropped.add(id(dq))
    rebuilt = []
    for node in graph.node:
        if id(node) in dropped:
            continue
        rebuilt.extend(replacement.get(id(node), [node]))
    del graph.node[:]
    graph.node.extend(rebuilt)
