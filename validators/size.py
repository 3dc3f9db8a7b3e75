"""Size: file bytes, quantized-weight container bytes and logical bits per weight, against the budget.

The BitConfig recorded in the model's metadata says what each layer should cost (toolchain.bitconfig);
the graph says what it does cost. They must agree byte for byte (integers + fp32 scales + zero points),
each layer's integers must be in its configured container, and the totals must fit the profile's budget
(`max_avg_bits`: logical bits per weight; `max_weight_mb`: container bytes / 1e6). An adapter branch's int8
factors are stored layers like the others and count in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto

from toolchain.exporters.metadata import ExportMetadata
from toolchain.profiles import DeviceProfile
from toolchain.validators.result import result_dict

MB = 1_000_000


def tensor_nbytes(t: TensorProto) -> int:
    """Stored bytes of an initializer: raw_data, the external-data length, or dims x element width."""
    if t.data_location == TensorProto.EXTERNAL:
        return int({e.key: e.value for e in t.external_data}.get("length", 0))
    if t.raw_data:
        return len(t.raw_data)
    bits = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize * 8
    bits = {TensorProto.INT4: 4, TensorProto.UINT4: 4, TensorProto.INT2: 2, TensorProto.UINT2: 2}.get(
        t.data_type, bits
    )
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
    max_avg_bits: float | None
    max_weight_mb: float | None
    layer_problems: list[str]

    @property
    def failures(self) -> list[str]:
        out = [f"size: {p}" for p in self.layer_problems]
        if self.max_avg_bits is not None and self.logical_bits_per_weight > self.max_avg_bits + 1e-9:
            out.append(
                f"size: {self.logical_bits_per_weight:.3f} logical bits per weight "
                f"> budget {self.max_avg_bits:g}"
            )
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
            problems.append(
                f"layer {layer!r}: {measured} bytes in the graph, the bit config says {lb.container_bytes}"
            )
        if inits[names[0]].data_type != lb.container.onnx_type:
            got = TensorProto.DataType.Name(inits[names[0]].data_type)
            problems.append(f"layer {layer!r}: integers stored as {got}, the bit config says {lb.container}")
    return total, problems


def check_size(
    model_path: Path, model: onnx.ModelProto, md: ExportMetadata, profile: DeviceProfile
) -> SizeResult:
    inits = {i.name: i for i in model.graph.initializer}
    measured, problems = _layer_problems(inits, md)
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
        max_avg_bits=profile.budget.max_avg_bits,
        max_weight_mb=profile.budget.max_weight_mb,
        layer_problems=problems,
    )
