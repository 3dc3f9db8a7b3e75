"""The torch twin of an exported graph: the same model computing exactly what the ONNX file computes.

Weights already match (QuantLinear holds the dequantized integers the exporter writes). What the graph adds
on top, the twin adds too: the integer embedding tables and int8 head Linears (dequantized) and, on request,
the activation arithmetic of the compute path: fake quantization of each quantized layer's input with the
calibrated scale and zero point (static), or with the range of the input itself (dynamic; round half to
even, as ONNX QuantizeLinear and DynamicQuantizeLinear do). The search's scorer, which has no export, finds
the static ranges in torch (`calibrated_qparams`) on the texts the export calibrates on.

The reference for `toolchain.validators.validate` is the twin without activation fake quantization (the
default): validation compares it with the graph's weights-only view, because on a deep model float noise
flips activation rounding and the flips cascade (validators.weights_view). With `activations=True` the twin
matches onnxruntime to float rounding only on small models (the tests check that on the tiny BERT).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from toolchain.exporters.activation_qdq import ACTIVATION_CONTAINER, ActivationQParams, qparams_for
from toolchain.exporters.dynamic_int8 import dynamic_fake_quantize
from toolchain.exporters.head_int8 import head_weights
from toolchain.profiles import EmbeddingQuant
from toolchain.quant.model import QuantEmbedding, QuantLinear
from toolchain.quant.tables import quantize_table


def fake_quantize(x: torch.Tensor, scale: float, zero_point: int, qmin: int, qmax: int) -> torch.Tensor:
    """scale * (clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point), fp32."""
    q = torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def _pre_hook(qp: ActivationQParams):
    qmin, qmax = qp.container.value_range

    def hook(_module: nn.Module, args: tuple) -> tuple:
        return (fake_quantize(args[0], qp.scale, qp.zero_point, qmin, qmax), *args[1:])

    return hook


def _dynamic_hook(_module: nn.Module, args: tuple) -> tuple:
    return (dynamic_fake_quantize(args[0]), *args[1:])


@torch.no_grad()
def calibrated_qparams(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, ActivationQParams]:
    """QuantLinear name -> the uint8 quantization of its input over `batches`: minimum and maximum, as the
    export's default (min/max) calibration measures them on the ONNX graph."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}
    seen: dict[str, tuple[float, float]] = {}

    def recorder(name: str):
        def hook(_module: nn.Module, args: tuple) -> None:
            lo, hi = seen.get(name, (math.inf, -math.inf))
            seen[name] = (min(lo, float(args[0].min())), max(hi, float(args[0].max())))

        return hook

    handles = [m.register_forward_pre_hook(recorder(name)) for name, m in layers.items()]
    try:
        for batch in batches:
            model(**batch)
    finally:
        for h in handles:
            h.remove()
    return {name: qparams_for(name, *seen[name], ACTIVATION_CONTAINER) for name in layers}


def quantize_inputs_statically(model: nn.Module, qparams: dict[str, ActivationQParams]) -> nn.Module:
    """`model` (in place) with the input of each named layer fake quantized with its fixed `qparams`: the
    static int8 path's activation arithmetic."""
    for layer, qp in qparams.items():
        model.get_submodule(layer).register_forward_pre_hook(_pre_hook(qp))
    return model


def quantize_inputs_dynamically(model: nn.Module, extra: Sequence[str] = ()) -> nn.Module:
    """`model` (in place) with the input of every QuantLinear, and of the `extra` named Linears, fake
    quantized per call as DynamicQuantizeLinear does: the dynamic int8 path's activation arithmetic."""
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]  # no branch: profiles refuse it
    for m in layers + [model.get_submodule(n) for n in extra]:
        m.register_forward_pre_hook(_dynamic_hook)
    return model


def torch_twin(
    model: nn.Module,
    *,
    embeddings: list[str] | None = None,
    embedding_quant: EmbeddingQuant | None = None,
    int8_head: bool = False,
    activation_qparams: dict[str, ActivationQParams] | None = None,
    dynamic_activations: bool = False,
) -> nn.Module:
    """A copy of `model` computing what its export computes (pass ExportResult's fields, or use twin_of).

    `embeddings`: the nn.Embedding modules the export stores as integers, as `embedding_quant` says (a
    QuantEmbedding already looks up its integers' rows: the export stored those);
    `dynamic_activations`: fake
    quantize the input of every QuantLinear (and int8 head Linear) per call, as DynamicQuantizeLinear does."""
    twin = copy.deepcopy(model).eval()
    for name in embeddings or []:
        emb = twin.get_submodule(name)
        if not isinstance(emb, QuantEmbedding):
            emb.weight.data = quantize_table(emb.weight, embedding_quant).dequantize()
    head = head_weights(twin) if int8_head else {}
    for name, qw in head.items():
        twin.get_submodule(name).weight.data = qw.dequantize()
    quantize_inputs_statically(twin, activation_qparams or {})
    if dynamic_activations:
        quantize_inputs_dynamically(twin, list(head))
    return twin


def twin_of(model: nn.Module, result, *, activations: bool = False) -> nn.Module:
    """torch_twin for an ExportResult: integer embeddings and int8 head when the export has them; its activation
    arithmetic only when `activations` (off by default: the validation reference keeps activations in float)."""
    qparams = result.activation_qparams if activations else None
    return torch_twin(
        model,
        embeddings=result.embedding_tables,
        embedding_quant=result.embedding_quant,
        int8_head=result.head_bytes > 0,
        activation_qparams=qparams,
        dynamic_activations=activations and result.activations == "int8_dynamic",
    )
