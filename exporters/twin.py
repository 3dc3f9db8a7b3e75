"""The torch twin of an exported graph: the same model computing exactly what the ONNX file computes.

Weights already match (QuantLinear holds the dequantized integers the exporter writes). What the graph adds
on top, the twin adds too: the int8 word-embedding table (dequantized) and, on request, fake quantization of
each quantized layer's input with the calibrated scale and zero point (round half to even, as ONNX
QuantizeLinear does).

The reference for `toolchain.validators.validate` is the twin without activation fake quantization (the
default): validation compares it with the graph's weights-only view, because on a deep model float noise
flips activation rounding and the flips cascade (validators.weights_view). With `activations=True` the twin
matches onnxruntime to float rounding only on small models (the tests check that on the tiny BERT).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from toolchain.exporters.activation_qdq import ActivationQParams
from toolchain.exporters.embedding_qdq import quantize_embedding_table


def fake_quantize(x: torch.Tensor, scale: float, zero_point: int, qmin: int, qmax: int) -> torch.Tensor:
    """scale * (clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point), fp32."""
    q = torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def _pre_hook(qp: ActivationQParams):
    qmin, qmax = qp.container.value_range

    def hook(_module: nn.Module, args: tuple) -> tuple:
        return (fake_quantize(args[0], qp.scale, qp.zero_point, qmin, qmax), *args[1:])

    return hook


def torch_twin(
    model: nn.Module,
    *,
    int8_embeddings: bool = False,
    activation_qparams: dict[str, ActivationQParams] | None = None,
) -> nn.Module:
    """A copy of `model` computing what its export computes (pass ExportResult's fields, or use twin_of)."""
    twin = copy.deepcopy(model).eval()
    if int8_embeddings:
        emb = twin.get_input_embeddings()
        emb.weight.data = quantize_embedding_table(emb.weight).dequantize()
    for layer, qp in (activation_qparams or {}).items():
        twin.get_submodule(layer).register_forward_pre_hook(_pre_hook(qp))
    return twin


def twin_of(model: nn.Module, result, *, activations: bool = False) -> nn.Module:
    """torch_twin for an ExportResult: int8 embeddings when the export has them; its activation qparams
    only when `activations` (off by default: the validation reference keeps activations in float)."""
    qparams = result.activation_qparams if activations else None
    return torch_twin(model, int8_embeddings=result.embedding_bytes > 0, activation_qparams=qparams)
