"""Swap a model's Linear layers (and embedding tables) for ones that compute with exactly the dequantized
integers the exporter writes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from enum import StrEnum

import torch
from torch import nn

from toolchain.bitconfig import BRANCH_DOWN, BRANCH_UP, BitConfig
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
    """A Linear whose weight is scale * (q - zero_point): the integers the exporter writes; optionally with
    a low-rank branch beside it, y = x W^T + bias + up(down(x))."""

    def __init__(self, qweight: QuantizedWeight, bias: torch.Tensor | None, branch: LowRankBranch | None = None):
        super().__init__()
        self.qweight = qweight
        self.register_buffer("weight", qweight.dequantize(), persistent=False)  # (out, in) fp32
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.out_features, self.in_features = qweight.shape
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.linear(x, self.weight, self.bias)
        return y if self.branch is None else y + self.branch(x)

    def extra_repr(self) -> str:
        qw = self.qweight
        gran = "per-channel" if qw.block_size is None else f"block {qw.block_size}"
        return f"{self.in_features} -> {self.out_features}, {qw.bits}-bit {qw.scheme}, {gran}"


class LowRankBranch(nn.Module):
    """up(down(x)) with both factors quantized Linears without bias: down (rank, in), up (out, rank)."""

    def __init__(self, down: QuantizedWeight, up: QuantizedWeight):
        super().__init__()
        if down.shape[0] != up.shape[1]:
            raise ValueError(f"branch factors do not chain: down {down.shape}, up {up.shape}")
        self.down, self.up = QuantLinear(down, None), QuantLinear(up, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


class QuantEmbedding(nn.Embedding):
    """An embedding table whose rows are scale * (q - zero_point): the integers the exporter stores
    (toolchain.quant.tables), dequantized once; it looks up rows like the nn.Embedding it replaces."""

    def __init__(self, qweight: QuantizedWeight, padding_idx: int | None = None):
        vocab, hidden = qweight.shape
        super().__init__(vocab, hidden, padding_idx=padding_idx, _weight=qweight.dequantize(), _freeze=True)
        self.qweight = qweight

    def extra_repr(self) -> str:
        qw = self.qweight
        gran = "per row" if qw.block_size is None else f"block {qw.block_size}"
        return f"{super().extra_repr()}, {qw.bits}-bit {qw.scheme}, {gran}"


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
    """A copy of `model` whose named Linear layers compute with the given integer weights; a layer whose
    `<name>.branch.down` and `<name>.branch.up` factors are given also gets that branch."""
    model = copy.deepcopy(model)
    factors = {n for n in weights if n.endswith((BRANCH_DOWN, BRANCH_UP))}
    layers = [n for n in weights if n not in factors]
    orphans = factors - {n + suffix for n in layers for suffix in (BRANCH_DOWN, BRANCH_UP)}
    if orphans:
        raise ValueError(f"branch factors without their layer: {sorted(orphans)}")
    for name in layers:
        linear = get_module(model, name)
        down, up = weights.get(name + BRANCH_DOWN), weights.get(name + BRANCH_UP)
        if (down is None) != (up is None):
            raise ValueError(f"layer {name!r}: a branch needs both factors, got only one")
        branch = None if down is None else LowRankBranch(down, up)
        set_module(model, name, QuantLinear(weights[name], linear.bias, branch))
    return model.eval()


def apply_tables(model: nn.Module, tables: dict[str, QuantizedWeight]) -> nn.Module:
    """`model` (in place) with each named nn.Embedding looking up the given integer table's rows."""
    for name, qw in tables.items():
        emb = get_module(model, name)
        if not isinstance(emb, nn.Embedding) or tuple(emb.weight.shape) != tuple(qw.shape):
            raise ValueError(f"table {name!r}: {tuple(qw.shape)} integers do not replace {emb}")
        set_module(model, name, QuantEmbedding(qw, emb.padding_idx))
    return model


def quantize_model(model: nn.Module, config: BitConfig, rounding: Rounding = Rounding.MSE) -> nn.Module:
    """A copy of `model` whose Linear layers compute with exactly `config`'s dequantized integers."""
    return apply_quantized(model, quantize_weights(model, config, rounding))


def quantized_weights_of(model: nn.Module) -> dict[str, QuantizedWeight]:
    """The integer weights of every QuantLinear in `model`, by module name (what the exporter writes)."""
    return {n: m.qweight for n, m in model.named_modules() if isinstance(m, QuantLinear)}
