"""Size: file bytes, container bytes and logical bits per parameter of the whole model, against the budget.

The BitConfig recorded in the model's metadata says what each searched layer should cost
(toolchain.bitconfig); the graph says what it does cost. They must agree byte for byte (integers + fp32
scales + zero points), each layer's integers must be in its configured container and hold only values its
bit-width and scheme allow (a "3-bit" layer holding a 4 fails), and the totals must fit the profile's
budget:
- `max_avg_bits`: logical bits per parameter over the whole graph: the searched layers as their LayerBits,
  embedding tables and head from their stored integers and scales, every other float initializer at 32 bits;
- `max_model_mb`: the file (and its external data) as written, / 1e6;
- `max_weight_mb`: the searched layers' container bytes / 1e6.
An adapter branch's int8 factors are stored layers like the others and count in all three.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from toolchain.exporters.metadata import ExportMetadata
from toolchain.profiles import DeviceProfile, EmbeddingQuant
from toolchain.quant.core import Scheme, int_range
from toolchain.quant.tables import TABLE_SCALE_BITS, offset, unpack_fields
from toolchain.validators.result import result_dict

MB = 1_000_000


def tensor_nbytes(t: TensorProto) -> int:
    """Stored bytes of an initializer: raw_data, the external-data length, or dims x element width."""
    if t.data_location == TensorProto.EXTERNAL:
        return int({e.key: e.value for e in t.external_data}.get("length", 0))
    if t.raw_data:
        return len(t.raw_data)
    bits = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize * 8
    bits = {TensorProto.INT4: 4, TensorProto.UINT4: 4, TensorProto.INT2: 2, TensorProto.UINT2: 2}.get(t.data_type, bits)
    return math.ceil(math.prod(t.dims) * bits / 8)


def model_files(model_path: Path, model: onnx.ModelProto) -> list[Path]:
    """The model file and every external data file its initializers point at."""
    locations = {
        e.value
        for t in model.graph.initializer
        if t.data_location == TensorProto.EXTERNAL
        for e in t.external_data
        if e.key == "location"
    }
    return [Path(model_path)] + [Path(model_path).parent / loc for loc in sorted(locations)]


@dataclass(frozen=True)
class SizeResult:
    name: str
    file_bytes: int
    weight_container_bytes: int  # measured in the graph
    expected_container_bytes: int  # from the BitConfig
    embedding_bytes: int
    logical_bits_per_weight: float
    container_bits_per_weight: float
    n_weights: int
    n_params: int  # every parameter the graph stores
    bits_per_param: float  # logical bits per parameter of the whole graph
    max_avg_bits: float | None
    max_weight_mb: float | None
    max_model_mb: float | None
    layer_problems: list[str]

    @property
    def failures(self) -> list[str]:
        out = [f"size: {p}" for p in self.layer_problems]
        if self.max_avg_bits is not None and self.bits_per_param > self.max_avg_bits + 1e-9:
            out.append(
                f"size: {self.bits_per_param:.3f} logical bits per parameter of the whole model "
                f"> budget.max_avg_bits {self.max_avg_bits:g}"
            )
        if self.max_model_mb is not None and self.file_bytes > self.max_model_mb * MB:
            out.append(f"size: the file is {self.file_bytes / MB:.3f} MB > budget.max_model_mb {self.max_model_mb:g}")
        if self.max_weight_mb is not None and self.weight_container_bytes > self.max_weight_mb * MB:
            out.append(
                f"size: {self.weight_container_bytes / MB:.3f} MB of weight containers "
                f"> budget {self.max_weight_mb:g} MB"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


def _layer_problems(inits: dict[str, TensorProto], md: ExportMetadata) -> tuple[int, list[str]]:
    """Measured container bytes of all layers, and every layer whose tensors disagree with its LayerBits."""
    total, problems = 0, []
    for layer, lb in md.bit_config.stored_layers().items():  # an adapter branch's int8 factors too
        names = md.layer_tensors.get(layer)
        if not names or any(n not in inits for n in names):
            problems.append(f"layer {layer!r}: its integer tensors {names} are not in the graph")
            continue
        measured = sum(tensor_nbytes(inits[n]) for n in names)
        total += measured
        if measured != lb.container_bytes:
            problems.append(f"layer {layer!r}: {measured} bytes in the graph, the bit config says {lb.container_bytes}")
        if inits[names[0]].data_type != lb.container.onnx_type:
            got = TensorProto.DataType.Name(inits[names[0]].data_type)
            problems.append(f"layer {layer!r}: integers stored as {got}, the bit config says {lb.container}")
            continue
        problems += _range_problems(f"layer {layer!r}", numpy_helper.to_array(inits[names[0]]), lb.bits, lb.scheme)
    return total, problems


def _range_problems(where: str, values: np.ndarray, bits: int, scheme: Scheme) -> list[str]:
    """The stored integers must lie in the range of the bit-width and scheme claimed for them."""
    lo, hi = int_range(bits, scheme)
    got_lo, got_hi = int(values.min()), int(values.max())
    if got_lo < lo or got_hi > hi:
        return [f"{where}: integers span [{got_lo}, {got_hi}], outside the {bits}-bit {scheme} range [{lo}, {hi}]"]
    return []


def _numel(t: TensorProto) -> int:
    return math.prod(t.dims)


def _table_bits(name: str, inits: dict[str, TensorProto], spec: EmbeddingQuant) -> tuple[int, int, list[str]]:
    """(entries, logical bits, problems) of one embedding table, from its stored tensors."""
    q, scale = inits[f"{name}.qweight"], inits[f"{name}.scale"]
    zp = inits.get(f"{name}.zero_point")
    where = f"embedding table {name!r}"
    if spec.bits == 8:
        entries, fields = _numel(q), numpy_helper.to_array(q)
    else:
        entries = _numel(q) * (8 // spec.field_bits)
        fields = _fields(numpy_helper.to_array(q), spec.field_bits) - offset(spec)
    groups = _numel(scale)
    bits = entries * spec.bits + groups * (TABLE_SCALE_BITS + (spec.bits if zp is not None else 0))
    problems = _range_problems(where, fields, spec.bits, spec.scheme)
    if zp is not None:  # its fields may hold more than `bits` bits (3-bit zero points in 4-bit fields)
        zps = _fields(numpy_helper.to_array(zp), spec.field_bits)
        problems += _range_problems(f"{where} zero points", zps, spec.bits, Scheme.ASYMMETRIC)
    return entries, bits, problems


def _fields(packed: np.ndarray, field_bits: int) -> np.ndarray:
    """Every unsigned field of packed (rows, bytes) uint8, as int16."""
    return unpack_fields(packed, field_bits, packed.shape[1] * (8 // field_bits)).astype(np.int16)


def _whole_model(inits: dict[str, TensorProto], md: ExportMetadata) -> tuple[int, float, list[str]]:
    """(parameters, logical bits, problems) of the whole graph: the searched layers as their LayerBits
    (checked byte for byte by _layer_problems), embedding tables and head Linears from their stored tensors,
    every other float initializer at 32 bits per element."""
    cfg = md.bit_config
    n, bits, problems = cfg.n_params, cfg.avg_bits * cfg.n_params, []
    quantized = {t for names in md.layer_tensors.values() for t in names} | set(md.embedding_tensors)
    for table in md.embedding_tables:
        entries, table_bits, found = _table_bits(table, inits, md.embeddings)
        n, bits, problems = n + entries, bits + table_bits, problems + found
    for layer, names in md.head_tensors.items():
        quantized |= set(names)
        q, scale = inits[names[0]], inits[names[1]]
        n, bits = n + _numel(q), bits + 8 * _numel(q) + 32 * _numel(scale)
        problems += _range_problems(f"head layer {layer!r}", numpy_helper.to_array(q), 8, Scheme.SYMMETRIC)
    floats = [t for t in inits.values() if t.data_type == TensorProto.FLOAT and t.name not in quantized]
    n += sum(_numel(t) for t in floats)
    return n, bits + 32 * sum(_numel(t) for t in floats), problems


def check_size(model_path: Path, model: onnx.ModelProto, md: ExportMetadata, profile: DeviceProfile) -> SizeResult:
    inits = {i.name: i for i in model.graph.initializer}
    measured, problems = _layer_problems(inits, md)
    n_params, model_bits, found = _whole_model(inits, md)
    cfg = md.bit_config
    return SizeResult(
        name="size",
        file_bytes=sum(p.stat().st_size for p in model_files(model_path, model)),
        weight_container_bytes=measured,
        expected_container_bytes=cfg.container_bytes,
        embedding_bytes=sum(tensor_nbytes(inits[n]) for n in md.embedding_tensors if n in inits),
        logical_bits_per_weight=cfg.avg_bits,
        container_bits_per_weight=8 * measured / cfg.n_params,
        n_weights=cfg.n_params,
        n_params=n_params,
        bits_per_param=model_bits / n_params,
        max_avg_bits=profile.budget.max_avg_bits,
        max_weight_mb=profile.budget.max_weight_mb,
        max_model_mb=profile.budget.max_model_mb,
        layer_problems=problems + found,
    )
