"""CoALinear: one quantizable Linear of the configuration-aware model.

It holds the layer's shared low-rank factors A (r x in) and B (out x r), its PEQA log-scales per
(bit-width, grid), and the float fine-tuned weight (for the rounding residual). Before each forward the
model sets `current` (this layer's LayerBits, its Q(c) and the rank); the forward then computes exactly the
weight `generate` ships for that configuration.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

from toolchain.adapter.base import QuantBase
from toolchain.adapter.merge import (
    dequantize_float,
    low_rank_delta,
    merge_then_round,
    merged_integers,
    per_weight,
    rounding_residual,
    to_quantized,
)
from toolchain.adapter.settings import DeltaUnits, ForwardMode, Grid, TrainSettings
from toolchain.bitconfig import BRANCH_BITS, LayerBits
from toolchain.errors import EdgeqError
from toolchain.models import LayerSpec
from toolchain.quant.core import QuantizedWeight, Scheme, quantize_rtn


def scale_key(bits: int, grid: Grid) -> str:
    return f"b{bits}_{grid.key}"


@dataclass
class LayerState:
    """What the next forward computes: this layer's configuration, its Q(c) and the rank."""

    bits: LayerBits
    q: torch.Tensor  # (r, r)
    rank: int


class CoALinear(nn.Module):
    """y = x w(c)^T + bias, with w(c) the merged integers (or float branch) of the current configuration."""

    def __init__(self, linear: nn.Linear, spec: LayerSpec, base: QuantBase, settings: TrainSettings):
        super().__init__()
        self.spec, self.base = spec, base
        self.alpha, self.units = settings.alpha, settings.units
        self.residual, self.mode = settings.residual, settings.forward
        self.coarse_bits = min(settings.bits)  # DeltaUnits.COARSE_STEP's reference bit-width
        # the base's own tensor, not a copy: the weight its entries are rounded from (never written)
        self.register_buffer("w_float", base.weight(spec.name), persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone(), persistent=False)
        self.lora_a = nn.Parameter(torch.empty(settings.rank, spec.in_features))
        self.lora_b = nn.Parameter(torch.zeros(spec.out_features, settings.rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # PEFT's LoRA default; B = 0 so delta = 0
        self.log_scales = nn.ParameterDict(
            {
                scale_key(b, g): nn.Parameter(torch.zeros_like(base.scale(spec.name, b, g)))
                for g in settings.grids
                for b in settings.bits
            }
        )
        self.current: LayerState | None = None

    def _base(self, lb: LayerBits) -> tuple[QuantizedWeight, torch.Tensor]:
        """(base integers on the model's device, learned scale (out, G)) of one layer configuration."""
        grid = Grid(scheme=lb.scheme, block_size=lb.block_size)
        base = self.base.get(self.spec.name, lb.bits, grid, self.lora_a.device)
        return base, base.scale * torch.exp(self.log_scales[scale_key(lb.bits, grid)])

    def _unit(self, base: QuantizedWeight) -> torch.Tensor | None:
        """(out, G) weight value of one unit of the adapter product on `base`'s grid (None: one base step)."""
        if self.units is DeltaUnits.WEIGHT:
            return torch.ones_like(base.scale)
        if self.units is DeltaUnits.COARSE_STEP and base.bits != self.coarse_bits:
            grid = Grid(scheme=base.scheme, block_size=base.block_size)
            return self.base.scale(self.spec.name, self.coarse_bits, grid, base.scale.device)
        return None

    def _parts(self, state: LayerState) -> tuple[QuantizedWeight, torch.Tensor, torch.Tensor]:
        """(base integers, learned scale (out, G), adapter product in units of the base step (out, in))."""
        base, scale = self._base(state.bits)
        prod = self.alpha * low_rank_delta(self.lora_a, self.lora_b, state.q, state.rank)
        unit = self._unit(base)
        if unit is not None:
            n, g = self.spec.in_features, base.block_size
            prod = prod * per_weight(unit, n, g) / per_weight(base.scale, n, g)
        return base, scale, prod

    def branch_factors(self, state: LayerState) -> tuple[torch.Tensor, torch.Tensor, QuantizedWeight, torch.Tensor]:
        """(up (out, k), down (k, in), base, learned scale) of the float branch: up @ down is the weight
        delta alpha * B Q(c) A, in units (`settings.units`) of each output row's mean step (so it stays rank
        k on a blocked grid too)."""
        k = state.rank
        base, scale = self._base(state.bits)
        up, down = self.alpha * self.lora_b[:, :k], state.q[:k, :k] @ self.lora_a[:k]
        unit = self._unit(base)
        return up * (base.scale if unit is None else unit).mean(dim=1, keepdim=True), down, base, scale

    def weight(self, state: LayerState) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, QuantizedWeight]:
        """(forward weight, its integers as floats (None for the float branch), learned scale, base)."""
        if self.mode is ForwardMode.BRANCH:
            up, down, base, scale = self.branch_factors(state)
            w_int = dequantize_float(base.q.float(), scale, base.zero_point, base.block_size)
            return w_int + up @ down, None, scale, base
        base, scale, steps = self._parts(state)
        offset = (steps + rounding_residual(self.w_float, base)) if self.residual else steps
        q = merged_integers(base.q.float(), offset, base.bits, base.scheme)
        return dequantize_float(q, scale, base.zero_point, base.block_size), q, scale, base

    @torch.no_grad()
    def generate(self, state: LayerState) -> QuantizedWeight:
        """The shipped integers; a float-branch layer is merged and rounded again (the naive path)."""
        if self.mode is ForwardMode.MERGED:
            _, q, scale, base = self.weight(state)
            return to_quantized(q, scale, base)
        up, down, base, scale = self.branch_factors(state)
        return merge_then_round(base, scale, up @ down)

    @torch.no_grad()
    def generate_branch(self, state: LayerState) -> tuple[QuantizedWeight, QuantizedWeight, QuantizedWeight]:
        """(frozen base integers with their learned scales, int8 down, int8 up): the layer as a deployable
        branch. The factors are rounded per row to int8 (absmax); nothing else is rounded."""
        up, down, base, scale = self.branch_factors(state)
        factor = functools.partial(quantize_rtn, bits=BRANCH_BITS, scheme=Scheme.SYMMETRIC, block_size=None)
        return to_quantized(base.q.float(), scale, base), factor(down.cpu()), factor(up.cpu())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.current is None:
            raise EdgeqError(f"{self.spec.name}: no configuration set (call CoAModel.set_config first)")
        return nn.functional.linear(x, self.weight(self.current)[0], self.bias)
