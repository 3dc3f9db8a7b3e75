"""8-bit word-embedding table: gather integer rows, then dequantize only the rows gathered.

DequantizeLinear of the whole table before Gather is not fused by onnxruntime: it dequantizes the full
table on every run (+20 ms on MiniLM, FACTS.md). So the graph gathers int8 rows and their per-row scales
and dequantizes the (batch, sequence, hidden) result:

    Gather(table_q int8 (V, H), input_ids) -> (B, S, H) int8 ─┐
    Gather(scale (V,), input_ids) -> Unsqueeze(-1) -> (B, S, 1) ─┴─ DequantizeLinear(axis=2, block_size=H)

Blocked DequantizeLinear needs opset 21; below it the same arithmetic is Cast(float) * scale.
The table is quantized symmetric per row (narrow int8 range, round to nearest over the row's absmax).
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from toolchain.errors import EdgeqError
from toolchain.exporters.qdq_weights import float_tensor, int_tensor
from toolchain.profiles import BLOCKED_MIN_OPSET
from toolchain.quant.containers import Container
from toolchain.quant.core import QuantizedWeight, Scheme, quantize_rtn

EMBEDDING_BITS = 8


def quantize_embedding_table(table: torch.Tensor) -> QuantizedWeight:
    """Symmetric per-row int8 integers and fp32 scales of a (vocab, hidden) table."""
    return quantize_rtn(table.detach().float(), EMBEDDING_BITS, Scheme.SYMMETRIC, None)


def word_embedding_table(model: nn.Module) -> torch.Tensor:
    return model.get_input_embeddings().weight.detach()


def _find_gather(graph: onnx.GraphProto, table: np.ndarray) -> tuple[onnx.NodeProto, str]:
    """The Gather reading `input_ids` from an initializer equal to the word-embedding table."""
    inits = {i.name: i for i in graph.initializer}
    hits = [
        (node, node.input[0])
        for node in graph.node
        if node.op_type == "Gather"
        and node.input[0] in inits
        and node.input[1] == "input_ids"
        and tuple(inits[node.input[0]].dims) == table.shape
        and np.array_equal(numpy_helper.to_array(inits[node.input[0]]), table)
    ]
    if len(hits) != 1:
        raise EdgeqError(
            f"export: embeddings: expected one Gather of the word-embedding table, found {len(hits)}"
        )
    others = [n.name for n in graph.node if hits[0][1] in n.input and n is not hits[0][0]]
    if others:
        raise EdgeqError(
            f"export: embeddings: the word-embedding table also feeds {others}; cannot quantize it"
        )
    return hits[0]


def _dequant_nodes(prefix: str, rows_q: str, rows_scale: str, output: str, hidden: int, opset: int):
    """Nodes turning gathered int8 rows (B, S, H) and gathered scales (B, S, 1) into float rows."""
    if opset >= BLOCKED_MIN_OPSET:
        return [
            helper.make_node(
                "DequantizeLinear",
                [rows_q, rows_scale],
                [output],
                name=f"{prefix}/DequantizeLinear",
                axis=2,
                block_size=hidden,
            )
        ]
    rows_f = f"{prefix}/rows_float"
    return [
        helper.make_node("Cast", [rows_q], [rows_f], name=f"{prefix}/Cast", to=onnx.TensorProto.FLOAT),
        helper.make_node("Mul", [rows_f, rows_scale], [output], name=f"{prefix}/Mul"),
    ]


def quantize_word_embeddings(model_proto: onnx.ModelProto, table: torch.Tensor, opset: int) -> list[str]:
    """Rewrite the word-embedding Gather to int8 rows + per-row scales; returns the new initializer names."""
    graph = model_proto.graph
    node, table_name = _find_gather(graph, table.numpy())
    qw = quantize_embedding_table(table)
    prefix = "embeddings.word_embeddings"
    tensors = [
        int_tensor(f"{prefix}.qweight", qw.q.numpy().astype(np.int64), Container.INT8),  # (V, H)
        float_tensor(f"{prefix}.scale", qw.scale.numpy()[:, 0]),  # (V,)
        helper.make_tensor(f"{prefix}.unsqueeze_axes", onnx.TensorProto.INT64, [1], [-1]),
    ]
    rows_q, scales, scales3 = f"{prefix}/rows_q", f"{prefix}/row_scales", f"{prefix}/row_scales_3d"
    nodes = [
        helper.make_node(
            "Gather", [tensors[0].name, "input_ids"], [rows_q], name=f"{prefix}/Gather_q", axis=0
        ),
        helper.make_node(
            "Gather", [tensors[1].name, "input_ids"], [scales], name=f"{prefix}/Gather_scale", axis=0
        ),
        helper.make_node("Unsqueeze", [scales, tensors[2].name], [scales3], name=f"{prefix}/Unsqueeze"),
        *_dequant_nodes(prefix, rows_q, scales3, node.output[0], table.shape[1], opset),
    ]
    at = list(graph.node).index(node)
    rest = [n for n in graph.node if n is not node]
    del graph.node[:]
    graph.node.extend(rest[:at] + nodes + rest[at:])
    kept = [i for i in graph.initializer if i.name != table_name]
    del graph.initializer[:]
    graph.initializer.extend(kept + tensors)
    return [t.name for t in tensors[:2]]
