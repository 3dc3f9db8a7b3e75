"""Swap a model's Linear layers for ones that compute with exactly a BitConfig's dequantized integers."""

from __future__ import annotations

import copy
from collections.abc import Callable
from enum import StrEnum

import torch
from torch import nn

from toolchain.bitconfig import BitConfig
from toolchain.errors import BadInputError
from toolchain.models import LayerSpec, quantizable_layers
from toolchain.quant.core import QuantizedWeight, quantize_mse, quantize_rtn


class Rounding(StrEnum):
    RTN = "rtn"  # absmax / min-max range, round to nearest
    MSE = "mse"  # clipping ratio searched per group (PEQA-style initialisation)


QUANTIZERS: dict[Rounding, Callable[..., QuantizedWeight]] = {
    Rounding.RTN: quantize_rtn,
    Rounding.MSE: quantize_mse,
}


class QuantLinear(nn.Module):
    """A Linear whose weight is scale * (q - zero_point): the integers the exporter writes."""

    def __init__(self, qweight: QuantizedWeight, bias: torch.Tensor | None):
        super().__init__()
        self.qweight = qweight
        self.register_buffer("weight", qweight.dequantize(), persistent=False)  # (out, in) fp32
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.out_features, self.in_features = qweight.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        qw = self.qweight
        gran = "per-channel" if qw.block_size is None else f"block {qw.block_size}"
        return f"{self.in_features} -> {self.out_features}, {qw.bits}-bit {qw.scheme}, {gran}"


def get_module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as exc:
        raise BadInputError(f"bit config: layer {name!r} is not a module of this model") from exc


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def check_config_layers(specs: list[LayerSpec], config: BitConfig) -> None:
    """The config must name exactly these quantizable layers, with their shapes (BadInputError otherwise)."""
    by_name = {s.name: s for s in specs}
    problems = [
        f"bit config: layer {n!r} is not a quantizable Linear of this model" for n in config.layers if n not in by_name
    ]
    problems += [f"bit config: layer {n!r} is missing" for n in by_name if n not in config.layers]
    for n, lb in config.layers.items():
        s = by_name.get(n)
        if s and (lb.out_features, lb.in_features) != (s.out_features, s.in_features):
            problems.append(
                f"bit config: layer {n!r} has shape ({lb.out_features}, {lb.in_features}), "
                f"the model's is ({s.out_features}, {s.in_features})"
            )
    if problems:
        raise BadInputError(problems)


def check_config_matches(model: nn.Module, config: BitConfig) -> list[LayerSpec]:
    """check_config_layers against `model`'s own quantizable layers; returns them."""
    specs = quantizable_layers(model)
    check_config_layers(specs, config)
    return specs


def quantize_weights(
    model: nn.Module, config: BitConfig, rounding: Rounding = Rounding.MSE
) -> dict[str, QuantizedWeight]:
    """Post-training quantization of each configured layer's weight (no training)."""
    check_config_matches(model, config)
    quantize = QUANTIZERS[rounding]
    out = {}
    for name, lb in config.layers.items():
        w = get_module(model, name).weight.detach()
        out[name] = quantize(w, lb.bits, lb.scheme, lb.block_size)
    return out


def apply_quantized(model: nn.Module, weights: dict[str, QuantizedWeight]) -> nn.Module:
    """A copy of `model` whose named Linear layers compute with the given integer weights."""
    model = copy.deepcopy(model)
    for name, qw in weights.items():
        linear = get_module(model, name)
        set_module(model, name, QuantLinear(qw, linear.bias))
    return model.eval()


def quantize_model(model: nn.Module, config: BitConfig, rounding: Rounding = Rounding.MSE) -> nn.Module:
    """A copy of `model` whose Linear layers compute with exactly `config`'s dequantized integers."""
    return apply_quantized(model, quantize_weights(model, config, rounding))


def quantized_weights_of(model: nn.Module) -> dict[str, QuantizedWeight]:
    """The integer weights of every QuantLinear in `model`, by module name (what the exporter writes)."""
    return {n: m.qweight for n, m in model.named_modules() if isinstance(m, QuantLinear)}
