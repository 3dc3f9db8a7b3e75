"""export_model: a quantized torch classifier -> one device profile's QDQ ONNX model (and its float twin).

Steps: refuse profile violations (nothing computed or written yet) -> float graph at the profile's opset
-> integer weights + DequantizeLinear in place of each quantized layer's float weight -> optional int8
embedding table -> the profile's compute path: weight-only, static int8 activations (QDQ) or dynamic int8
activations (MatMulInteger) -> metadata -> checker and integrity checks -> write.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from torch import nn

from toolchain.bitconfig import BitConfig
from toolchain.data.dataset import ModelInput, tokenizer_args
from toolchain.errors import EdgeqError
from toolchain.evaluate import DEFAULT_MAX_LENGTH
from toolchain.exporters import activation_qdq as act
from toolchain.exporters.dynamic_int8 import rewrite_dynamic_int8
from toolchain.exporters.embedding_qdq import quantize_embeddings, table_weights
from toolchain.exporters.float_graph import export_float_graph
from toolchain.exporters.head_int8 import head_weights, round_head_in_graph
from toolchain.exporters.metadata import ExportMetadata, write_metadata
from toolchain.exporters.profile_check import check_export_request
from toolchain.exporters.qdq_weights import rewrite_weights
from toolchain.exporters.save import check_model, files_bytes, needs_external_data, save_onnx
from toolchain.exporters.weight_sites import WeightSite, lift_constants, locate_weights
from toolchain.profiles import ActivationQuant, DeviceProfile, EmbeddingQuant, TensorQuant
from toolchain.quant.containers import Container
from toolchain.quant.core import QuantizedWeight
from toolchain.quant.model import quantized_weights_of


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and what its weights cost."""

    model_path: Path  # the quantized model.onnx
    float_model_path: Path  # the float graph of the same model, kept for latency comparison
    files: list[Path]  # every file of the quantized model (model.onnx, and model.onnx.data when large)
    profile: str
    opset: int
    ir_version: int
    file_bytes: int  # quantized model on disk, external data included
    float_file_bytes: int
    layer_container_bytes: dict[str, int]  # integers + scales + zero points in the graph, per layer
    embedding_bytes: int  # integer embedding tables + scales in the graph (0 when the tables stay float)
    activation_qparams: dict[str, act.ActivationQParams] = field(default_factory=dict)  # layer -> its input's
    embedding_tables: list[str] = field(default_factory=list)  # the nn.Embedding modules stored as integers
    embedding_quant: EmbeddingQuant | None = None  # how they are stored
    head_bytes: int = 0  # int8 head Linears + scales in the graph (0 when the head stays float)
    activations: str = "none"  # the profile's compute path (ActivationQuant)

    @property
    def weight_container_bytes(self) -> int:
        return sum(self.layer_container_bytes.values())

    @property
    def external_data(self) -> bool:
        return len(self.files) > 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(
            model_path=str(self.model_path),
            float_model_path=str(self.float_model_path),
            files=[str(f) for f in self.files],
            weight_container_bytes=self.weight_container_bytes,
            external_data=self.external_data,
            embedding_quant=None if self.embedding_quant is None else self.embedding_quant.model_dump(mode="json"),
        )
        return d


def _calibration_feeds(tokenizer, texts: Sequence[ModelInput], names: list[str], max_length: int):
    """One text per run, all padded to the longest calibration text (at most `max_length` tokens):
    onnxruntime's histogram calibrators (percentile) stack the runs' activations into one array, so every
    run must have the same shape."""
    first, second = tokenizer_args(texts)
    enc = tokenizer(first, second, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    for i in range(len(texts)):
        yield {n: np.asarray(enc[n][i : i + 1], dtype=np.int64) for n in names}


def _quantize_activations(
    qmodel, sites, tokenizer, texts, max_length, method: act.Calibration
) -> dict[str, act.ActivationQParams]:
    """Calibrate and insert activation Q/DQ; layer -> the qparams of its input tensor."""
    inputs = act.activation_inputs(sites, qmodel.graph)
    feeds = _calibration_feeds(tokenizer, texts, [i.name for i in qmodel.graph.input], max_length)
    ranges = act.calibrate_ranges(qmodel, set(inputs.values()), feeds, method)
    by_tensor = {t: act.qparams_for(t, lo, hi, act.ACTIVATION_CONTAINER) for t, (lo, hi) in ranges.items()}
    act.insert_activation_qdq(qmodel, sites, by_tensor)
    return {layer: by_tensor[t] for layer, t in inputs.items()}


def _tensor_bytes(model: onnx.ModelProto, names: list[str]) -> int:
    inits = {i.name: i for i in model.graph.initializer}
    return sum(len(inits[n].raw_data) for n in names)


def _check_no_float_copy(model: onnx.ModelProto, weights: dict[str, QuantizedWeight]) -> None:
    """No float initializer may equal a quantized weight (or its transpose): integers are the only copy."""
    dense = {layer: qw.dequantize().numpy() for layer, qw in weights.items()}
    by_shape: dict[tuple, list[tuple[str, np.ndarray]]] = {}
    for layer, w in dense.items():
        by_shape.setdefault(w.shape, []).append((layer, w))
        by_shape.setdefault(w.T.shape, []).append((layer, w.T))
    for init in model.graph.initializer:
        candidates = by_shape.get(tuple(init.dims), []) if init.data_type == onnx.TensorProto.FLOAT else []
        arr = onnx.numpy_helper.to_array(init) if candidates else None
        for layer, w in candidates:
            if np.array_equal(arr, w):
                raise EdgeqError(f"export: a float copy of layer {layer!r} remains as initializer {init.name!r}")


@dataclass(frozen=True)
class _Request:
    """What the caller asked for, handed through the rewrite steps."""

    profile: DeviceProfile
    bit_config: BitConfig
    calibration_texts: list[str] | None
    calibration: act.Calibration
    max_length: int


@dataclass(frozen=True)
class _Quantized:
    model: onnx.ModelProto
    layer_tensors: dict[str, list[str]]  # layer -> its integer, scale (and zero-point) initializers
    metadata: ExportMetadata
    activation_qparams: dict[str, act.ActivationQParams]
    head: dict[str, QuantizedWeight]


def _quantized_graph(float_graph, model, tokenizer, weights, req: _Request) -> _Quantized:
    """The float graph with every quantization the profile asks for, and its metadata."""
    qmodel = copy.deepcopy(float_graph)
    lift_constants(qmodel.graph)
    head = head_weights(model) if req.profile.head is TensorQuant.INT8 else {}
    dense = {n: w.dequantize().numpy() for n, w in weights.items()}
    dense |= {n: model.get_submodule(n).weight.detach().float().numpy() for n in head}
    sites: dict[str, WeightSite] = locate_weights(qmodel.graph, dense)
    round_head_in_graph(qmodel.graph, sites, head)
    containers = {layer: lb.container for layer, lb in req.bit_config.stored_layers().items()}
    containers |= {layer: Container.INT8 for layer in head}
    integer_path = req.profile.activations is not ActivationQuant.NONE  # int8 kernels read int8 weights
    tensors = rewrite_weights(qmodel, sites, weights | head, containers, widen=integer_path)
    if req.profile.activations is ActivationQuant.INT8_DYNAMIC:
        rewrite_dynamic_int8(qmodel, sites, tensors, containers)
    emb_tensors, qparams = {}, {}
    if req.profile.embeddings is not None:
        emb_tensors = quantize_embeddings(
            qmodel, table_weights(model, req.profile.embeddings), req.profile.embeddings, req.profile.onnx.opset
        )
    if req.profile.activations is ActivationQuant.INT8_STATIC:
        qparams = _quantize_activations(
            qmodel, sites, tokenizer, req.calibration_texts, req.max_length, req.calibration
        )
    layer_tensors = {layer: names for layer, names in tensors.items() if layer not in head}
    metadata = ExportMetadata(
        profile=req.profile.name,
        bit_config=req.bit_config,
        layer_tensors=layer_tensors,
        embeddings=req.profile.embeddings,
        embedding_tensors=[n for names in emb_tensors.values() for n in names],
        activations=str(req.profile.activations),
        activation_qparams={layer: qp.to_dict() for layer, qp in qparams.items()},
        head=str(req.profile.head),
        head_tensors={layer: tensors[layer] for layer in head},
    )
    write_metadata(qmodel, metadata)
    return _Quantized(qmodel, layer_tensors, metadata, qparams, head)


def float_path_for(out_path: Path) -> Path:
    """model.onnx -> model.float.onnx beside it."""
    return out_path.with_name(out_path.stem + ".float" + out_path.suffix)


def export_model(
    model: nn.Module,
    tokenizer,
    profile: DeviceProfile,
    bit_config: BitConfig,
    out_path: Path,
    *,
    calibration_texts: list[str] | None = None,
    calibration: act.Calibration = act.Calibration.MINMAX,
    max_length: int = DEFAULT_MAX_LENGTH,
    float_path: Path | None = None,
) -> ExportResult:
    """Export `model` (its QuantLinear layers as given by `bit_config`) for `profile` to `out_path`.

    Raises BadInputError, before computing or writing anything, when the config breaks the profile.
    `calibration_texts` (training texts) are needed when the profile quantizes activations statically.
    The float graph of the same model goes to `float_path` (default `<stem>.float.onnx` beside it).
    """
    out_path = Path(out_path)
    float_path = Path(float_path) if float_path else float_path_for(out_path)
    weights = quantized_weights_of(model)
    check_export_request(profile, bit_config, weights, bool(calibration_texts))
    req = _Request(profile, bit_config, calibration_texts, calibration, max_length)
    float_graph = export_float_graph(model, tokenizer, profile.onnx.opset)
    q = _quantized_graph(float_graph, model, tokenizer, weights, req)
    if not needs_external_data(q.model):
        check_model(q.model)
    _check_no_float_copy(q.model, weights | q.head)
    layer_bytes = {layer: _tensor_bytes(q.model, names) for layer, names in q.layer_tensors.items()}
    emb_bytes, ir_version = _tensor_bytes(q.model, q.metadata.embedding_tensors), q.model.ir_version
    head_bytes = sum(_tensor_bytes(q.model, names) for names in q.metadata.head_tensors.values())
    float_files = save_onnx(float_graph, float_path)
    files = save_onnx(q.model, out_path)  # last: a large model's tensors move to external data in place
    return ExportResult(
        model_path=out_path,
        float_model_path=float_path,
        files=files,
        profile=profile.name,
        opset=profile.onnx.opset,
        ir_version=ir_version,
        file_bytes=files_bytes(files),
        float_file_bytes=files_bytes(float_files),
        layer_container_bytes=layer_bytes,
        embedding_bytes=emb_bytes,
        activation_qparams=q.activation_qparams,
        embedding_tables=q.metadata.embedding_tables,
        embedding_quant=profile.embeddings,
        head_bytes=head_bytes,
        activations=str(profile.activations),
    )
