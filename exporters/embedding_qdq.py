"""Integer embedding tables: gather integer rows, then dequantize only the rows gathered.

DequantizeLinear of the whole table before Gather is not fused by onnxruntime: it dequantizes the full
table on every run (+20 ms on MiniLM's word embeddings, docs/onnxruntime.md). So the graph gathers integer
rows and their scales and dequantizes the (..., hidden) result. Every integer table of the model (word,
position, token type: `table_modules`) is rewritten, whatever its indices. The integers are `toolchain.quant.tables`'s.

8 bits (int8 entries, one fp16 scale per row):

    Gather(table_q int8 (V, H), ids) ─────────────────────────────┐
    Gather(scale fp16 (V,), ids) -> Cast -> Unsqueeze(-1) ────────┴─ DequantizeLinear(axis=-1, block_size=H)

(blocked DequantizeLinear needs opset 21; below it the same arithmetic is Cast(float) * scale).

2, 3 and 4 bits (unsigned fields packed in bytes, fp16 scales per row or block, standard ONNX only):

    Gather(packed uint8 (V, H*f/8), ids) -> Unsqueeze(-1) -> BitShift left, right -> (..., H*f/8, 8/f) fields
      -> Reshape (..., G, block) -> Cast -> Sub(zero point or offset) -> Mul(gathered scales (..., G, 1))
      -> Reshape (..., H)

The packed table stays packed in memory (the unpacking runs on the gathered rows only), so runtime weight
memory is the file's bytes, not a float table.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from toolchain.errors import BadInputError, EdgeqError
from toolchain.exporters.qdq_weights import int_tensor
from toolchain.models import table_modules
from toolchain.profiles import BLOCKED_MIN_OPSET, EmbeddingQuant
from toolchain.quant.containers import Container
from toolchain.quant.core import QuantizedWeight, Scheme
from toolchain.quant.model import QuantEmbedding
from toolchain.quant.tables import groups_per_row, offset, pack_fields, quantize_table


def table_weights(model: nn.Module, spec: EmbeddingQuant) -> dict[str, tuple[torch.Tensor, QuantizedWeight]]:
    """module name -> (the table the graph holds, its integers as `spec` stores them) of every integer table
    (`table_modules`): a QuantEmbedding's own integers (refused unless they are in format `spec`), else
    quantize_table's."""
    out = {}
    for name in table_modules(model):
        m = model.get_submodule(name)
        if isinstance(m, QuantEmbedding):
            qw = m.qweight
            if (qw.bits, qw.scheme, qw.block_size) != (spec.bits, spec.scheme, spec.block_size):
                raise BadInputError(
                    f"embeddings: table {name!r} holds {qw.bits}-bit {qw.scheme} integers (block {qw.block_size}); "
                    f"the profile stores {spec.label()}"
                )
            out[name] = (m.weight.detach(), qw)
        else:
            out[name] = (m.weight.detach(), quantize_table(m.weight, spec))
    return out


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


def _fp16_scales(name: str, qscale: torch.Tensor) -> TensorProto:
    """(V, G) fp16 scales, exact: the scales were rounded to fp16 when quantizing."""
    values = qscale.numpy().astype(np.float16)
    dims = [values.shape[0]] if values.shape[1] == 1 else list(values.shape)
    return helper.make_tensor(f"{name}.scale", TensorProto.FLOAT16, dims, values.tobytes(), raw=True)


def _int8_nodes(name: str, qw: QuantizedWeight, ids: str, output: str, opset: int):
    tensors = [
        int_tensor(f"{name}.qweight", qw.q.numpy().astype(np.int64), Container.INT8),  # (V, H)
        _fp16_scales(name, qw.scale),  # (V,)
        helper.make_tensor(f"{name}.unsqueeze_axes", TensorProto.INT64, [1], [-1]),
    ]
    rows_q, scales16, scales = f"{name}/rows_q", f"{name}/row_scales_fp16", f"{name}/row_scales"
    scales_nd = f"{name}/row_scales_nd"
    nodes = [
        helper.make_node("Gather", [tensors[0].name, ids], [rows_q], name=f"{name}/Gather_q", axis=0),
        helper.make_node("Gather", [tensors[1].name, ids], [scales16], name=f"{name}/Gather_scale", axis=0),
        helper.make_node("Cast", [scales16], [scales], name=f"{name}/Cast_scale", to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", [scales, tensors[2].name], [scales_nd], name=f"{name}/Unsqueeze"),
        *_dequant_nodes(name, rows_q, scales_nd, output, qw.shape[1], opset),
    ]
    return nodes, tensors, tensors[:2]


class _Nodes:
    """Node list builder with names under one prefix."""

    def __init__(self, prefix: str):
        self.prefix, self.nodes, self.tensors = prefix, [], []

    def const(self, suffix: str, values: np.ndarray) -> str:
        t = numpy_helper.from_array(values, f"{self.prefix}.{suffix}")
        self.tensors.append(t)
        return t.name

    def op(self, op_type: str, inputs: list[str], tag: str, **attrs) -> str:
        out = f"{self.prefix}/{tag}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _unpack(b: _Nodes, packed: str, ids: str, field_bits: int, tag: str) -> str:
    """Gathered packed rows (..., P) uint8 -> their fields (..., P, 8 / field_bits) uint8, in entry order."""
    k = 8 // field_bits
    left = b.const(f"{tag}_shift_left", np.array([8 - (i + 1) * field_bits for i in range(k)], np.uint8))
    right = b.const(f"{tag}_shift_right", np.array([8 - field_bits], np.uint8))
    rows = b.op("Gather", [packed, ids], f"Gather_{tag}", axis=0)
    rows = b.op("Unsqueeze", [rows, b.const(f"{tag}_axes", np.array([-1], np.int64))], f"Unsqueeze_{tag}")
    rows = b.op("BitShift", [rows, left], f"BitShift_left_{tag}", direction="LEFT")
    return b.op("BitShift", [rows, right], f"BitShift_right_{tag}", direction="RIGHT")


def _packed_nodes(name: str, qw: QuantizedWeight, ids: str, output: str, spec: EmbeddingQuant):
    hidden = qw.shape[1]
    g = groups_per_row(hidden, spec)
    f = spec.field_bits
    b = _Nodes(name)
    stored = [
        numpy_helper.from_array(pack_fields((qw.q + offset(spec)).numpy().astype(np.uint8), f), f"{name}.qweight")
    ]
    stored.append(_fp16_scales(name, qw.scale))
    if spec.scheme is Scheme.ASYMMETRIC:
        stored.append(
            numpy_helper.from_array(pack_fields(qw.zero_point.numpy().astype(np.uint8), f), f"{name}.zero_point")
        )
    b.tensors += stored
    ids_shape = b.op("Shape", [ids], "Shape_ids")
    grouped = b.op(
        "Concat", [ids_shape, b.const("group_shape", np.array([g, hidden // g], np.int64))], "Concat_g", axis=0
    )
    flat = b.op("Concat", [ids_shape, b.const("row_shape", np.array([hidden], np.int64))], "Concat_h", axis=0)
    fields = _unpack(b, stored[0].name, ids, f, "q")
    q = b.op("Cast", [b.op("Reshape", [fields, grouped], "Reshape_q")], "Cast_q", to=TensorProto.FLOAT)
    last = b.const("last_axis", np.array([-1], np.int64))
    if spec.scheme is Scheme.ASYMMETRIC:
        zp_fields = _unpack(b, stored[2].name, ids, f, "zero_point")
        zp_flat = b.op("Concat", [ids_shape, b.const("zp_width", np.array([-1], np.int64))], "Concat_zp", axis=0)
        zp = b.op("Reshape", [zp_fields, zp_flat], "Reshape_zero_point")
        zp = b.op(
            "Slice",
            [zp, b.const("zp_start", np.array([0], np.int64)), b.const("zp_end", np.array([g], np.int64)), last],
            "Slice_zero_point",
        )
        zp = b.op(
            "Unsqueeze",
            [b.op("Cast", [zp], "Cast_zero_point", to=TensorProto.FLOAT), last],
            "Unsqueeze_zero_point_group",
        )
    else:
        zp = b.const("offset", np.array(offset(spec), np.float32))
    centered = b.op("Sub", [q, zp], "Sub")
    scales = b.op(
        "Cast", [b.op("Gather", [stored[1].name, ids], "Gather_scale", axis=0)], "Cast_scale", to=TensorProto.FLOAT
    )
    if g == 1:  # (V,) scales gather to (...,): one more axis for the group
        scales = b.op("Unsqueeze", [scales, last], "Unsqueeze_scale_g")
    scales = b.op("Unsqueeze", [scales, last], "Unsqueeze_scale")
    rows = b.op("Mul", [centered, scales], "Mul")
    b.nodes.append(helper.make_node("Reshape", [rows, flat], [output], name=f"{name}/Reshape_rows"))
    return b.nodes, b.tensors, stored


def _quantize_table(
    graph: onnx.GraphProto, name: str, table: torch.Tensor, qw: QuantizedWeight, spec: EmbeddingQuant, opset: int
) -> list[str]:
    found = _find_gather(graph, name, table.numpy())
    if found is None:
        return []
    node, table_name = found
    if spec.bits == 8:
        nodes, tensors, stored = _int8_nodes(name, qw, node.input[1], node.output[0], opset)
    else:
        nodes, tensors, stored = _packed_nodes(name, qw, node.input[1], node.output[0], spec)
    at = list(graph.node).index(node)
    rest = [n for n in graph.node if n is not node]
    del graph.node[:]
    graph.node.extend(rest[:at] + nodes + rest[at:])
    kept = [i for i in graph.initializer if i.name != table_name]
    del graph.initializer[:]
    graph.initializer.extend(kept + tensors)
    return [t.name for t in stored]


def quantize_embeddings(
    model_proto: onnx.ModelProto,
    tables: dict[str, tuple[torch.Tensor, QuantizedWeight]],
    spec: EmbeddingQuant,
    opset: int,
) -> dict[str, list[str]]:
    """Rewrite the Gather of every table the graph holds (`table_weights`) to integer rows + scales as
    `spec` says.

    Returns table name -> its stored initializers (integers, scales, zero points), for the tables found."""
    out = {}
    for name, (table, qw) in tables.items():
        tensors = _quantize_table(model_proto.graph, name, table, qw, spec, opset)
        if tensors:
            out[name] = tensors
    return out
