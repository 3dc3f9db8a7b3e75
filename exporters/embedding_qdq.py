"""8-bit embedding tables: gather integer rows, then dequantize only the rows gathered.

DequantizeLinear of the whole table before Gather is not fused by onnxruntime: it dequantizes the full
table on every run (+20 ms on MiniLM's word embeddings, docs/onnxruntime.md). So the graph gathers int8 rows
and their per-row scales and dequantizes the (..., hidden) result:

    Gather(table_q int8 (V, H), ids) -> (B, S, H) int8 ─┐
    Gather(scale fp16 (V,), ids) -> Cast -> Unsqueeze(-1) -> (B, S, 1) ─┴─ DequantizeLinear(axis=-1, block_size=H)

Every nn.Embedding of the model (word, position, token type) is rewritten this way, whatever its indices.
Blocked DequantizeLinear needs opset 21; below it the same arithmetic is Cast(float) * scale.
Each table is quantized symmetric per row (narrow int8 range, round to nearest over the row's absmax), its
row scales stored as fp16 and cast to float after the gather.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from toolchain.errors import EdgeqError
from toolchain.exporters.qdq_weights import int_tensor
from toolchain.profiles import BLOCKED_MIN_OPSET
from toolchain.quant.containers import Container
from toolchain.quant.core import QuantizedWeight, Scheme, quantize_with, scales_for

EMBEDDING_BITS = 8


FP16_TINY = float(np.finfo(np.float16).tiny)  # smallest normal fp16: a row scale never underflows


def quantize_embedding_table(table: torch.Tensor) -> QuantizedWeight:
    """Symmetric per-row int8 integers of a (vocab, hidden) table, with fp16-exact scales.

    The row scales are stored as fp16 (a Gather of scales feeds no fused kernel, so fp16 costs nothing at
    run time and halves the 4 bytes per row; on MiniLM's 30,522 rows that is 61 KB). The integers are
    rounded against the fp16 scale, so they are exact for the scale that ships."""
    w = table.detach().float()
    scale, _ = scales_for(w, EMBEDDING_BITS, Scheme.SYMMETRIC, None)
    scale = scale.clamp(min=FP16_TINY).half().float()
    return quantize_with(w, scale, None, EMBEDDING_BITS, Scheme.SYMMETRIC, None)


def embedding_tables(model: nn.Module) -> dict[str, torch.Tensor]:
    """module name -> (vocab, hidden) weight of every nn.Embedding in the model."""
    return {name: m.weight.detach() for name, m in model.named_modules() if isinstance(m, nn.Embedding)}


def _find_gather(graph: onnx.GraphProto, name: str, table: np.ndarray) -> tuple[onnx.NodeProto, str] | None:
    """The one Gather (axis 0) reading rows of an initializer equal to `table`; None when the graph holds
    no such table (the exporter folded it away, e.g. a token-type table read at constant ids)."""
    inits = {i.name: i for i in graph.initializer}
    if not any(
        tuple(t.dims) == table.shape and np.array_equal(numpy_helper.to_array(t), table) for t in inits.values()
    ):
        return None
    hits = [
        (node, node.input[0])
        for node in graph.node
        if node.op_type == "Gather"
        and node.input[0] in inits
        and all(a.i == 0 for a in node.attribute if a.name == "axis")
        and tuple(inits[node.input[0]].dims) == table.shape
        and np.array_equal(numpy_helper.to_array(inits[node.input[0]]), table)
    ]
    if len(hits) != 1:
        raise EdgeqError(f"export: embeddings: expected one Gather of table {name!r}, found {len(hits)}")
    others = [n.name for n in graph.node if hits[0][1] in n.input and n is not hits[0][0]]
    if others:
        raise EdgeqError(f"export: embeddings: table {name!r} also feeds {others}; cannot quantize it")
    return hits[0]


def _dequant_nodes(prefix: str, rows_q: str, rows_scale: str, output: str, hidden: int, opset: int):
    """Nodes turning gathered int8 rows (..., H) and gathered scales (..., 1) into float rows."""
    if opset >= BLOCKED_MIN_OPSET:
        return [
            helper.make_node(
                "DequantizeLinear",
                [rows_q, rows_scale],
                [output],
                name=f"{prefix}/DequantizeLinear",
                axis=-1,
                block_size=hidden,
            )
        ]
    rows_f = f"{prefix}/rows_float"
    return [
        helper.make_node("Cast", [rows_q], [rows_f], name=f"{prefix}/Cast", to=onnx.TensorProto.FLOAT),
        helper.make_node("Mul", [rows_f, rows_scale], [output], name=f"{prefix}/Mul"),
    ]


def _quantize_table(graph: onnx.GraphProto, name: str, table: torch.Tensor, opset: int) -> list[str]:
    found = _find_gather(graph, name, table.numpy())
    if found is None:
        return []
    node, table_name = found
    ids = node.input[1]
    qw = quantize_embedding_table(table)
    tensors = [
        int_tensor(f"{name}.qweight", qw.q.numpy().astype(np.int64), Container.INT8),  # (V, H)
        helper.make_tensor(  # (V,) fp16: exact, the scales were rounded to fp16 when quantizing
            f"{name}.scale",
            onnx.TensorProto.FLOAT16,
            [table.shape[0]],
            qw.scale.numpy()[:, 0].astype(np.float16).tobytes(),
            raw=True,
        ),
        helper.make_tensor(f"{name}.unsqueeze_axes", onnx.TensorProto.INT64, [1], [-1]),
    ]
    rows_q, scales16, scales = f"{name}/rows_q", f"{name}/row_scales_fp16", f"{name}/row_scales"
    scales_nd = f"{name}/row_scales_nd"
    nodes = [
        helper.make_node("Gather", [tensors[0].name, ids], [rows_q], name=f"{name}/Gather_q", axis=0),
        helper.make_node("Gather", [tensors[1].name, ids], [scales16], name=f"{name}/Gather_scale", axis=0),
        helper.make_node("Cast", [scales16], [scales], name=f"{name}/Cast_scale", to=onnx.TensorProto.FLOAT),
        helper.make_node("Unsqueeze", [scales, tensors[2].name], [scales_nd], name=f"{name}/Unsqueeze"),
        *_dequant_nodes(name, rows_q, scales_nd, node.output[0], table.shape[1], opset),
    ]
    at = list(graph.node).index(node)
    rest = [n for n in graph.node if n is not node]
    del graph.node[:]
    graph.node.extend(rest[:at] + nodes + rest[at:])
    kept = [i for i in graph.initializer if i.name != table_name]
    del graph.initializer[:]
    graph.initializer.extend(kept + tensors)
    return [t.name for t in tensors[:2]]


def quantize_embeddings(
    model_proto: onnx.ModelProto, tables: dict[str, torch.Tensor], opset: int
) -> dict[str, list[str]]:
    """Rewrite the Gather of every table the graph holds to int8 rows + per-row scales.

    Returns table name -> its new initializers (integers, scales), for the tables found in the graph."""
    out = {}
    for name, table in tables.items():
        tensors = _quantize_table(model_proto.graph, name, table, opset)
        if tensors:
            out[name] = tensors
    return out
