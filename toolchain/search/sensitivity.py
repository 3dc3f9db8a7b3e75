"""Per-layer sensitivity: how much the loss rises when one layer alone drops to low bits.

It seeds the search (greedy allocation gives sensitive layers more bits) and orders local moves. Two ways:
- `loss_sensitivity`: measured with any scorer, one evaluation per layer (or per group of layers) plus one;
- `weight_sensitivity`: relative rounding error of each weight, a scorer-free proxy (no forward passes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from toolchain.bitconfig import BitConfig
from toolchain.models import LayerSpec
from toolchain.quant.core import Scheme, quantize_rtn
from toolchain.search.space import SearchSpace, Variant

_FLOOR = 1e-9  # a layer measured as harmless (or noisily negative) still costs something to lower


@dataclass(frozen=True)
class Sensitivity:
    """Loss increase per layer (spec order) when that layer alone is at `ref_bits`."""

    names: tuple[str, ...]
    values: tuple[float, ...]
    ref_bits: int
    method: str  # "loss", "weight" or "uniform"

    @classmethod
    def uniform(cls, specs: Sequence[LayerSpec], ref_bits: int = 2) -> Sensitivity:
        return cls(tuple(s.name for s in specs), (1.0,) * len(specs), ref_bits, "uniform")

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "ref_bits": self.ref_bits,
            "values": dict(zip(self.names, self.values)),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Sensitivity:
        return cls(tuple(d["values"]), tuple(float(v) for v in d["values"].values()), int(d["ref_bits"]), d["method"])

    def aligned(self, specs: Sequence[LayerSpec]) -> list[float]:
        """Values in `specs` order; a layer it does not know gets the median (so a stale file still works)."""
        by_name = dict(zip(self.names, self.values))
        median = sorted(self.values)[len(self.values) // 2] if self.values else 1.0
        return [by_name.get(s.name, median) for s in specs]


def module_type(spec: LayerSpec) -> str:
    """Probe group of a layer: its module type (a BERT block's six Linears are six groups)."""
    return spec.kind


def loss_sensitivity(
    score: Callable[[BitConfig], float],
    space: SearchSpace,
    variant: Variant | None = None,
    group: Callable[[LayerSpec], str] | None = None,
    low_bits: int | None = None,
) -> Sensitivity:
    """Loss rise of each layer (or group, shared equally by its layers) alone at `low_bits`.

    The others stay at the highest bits. Costs one evaluation per group plus one. `group=module_type`
    probes the six module types of a BERT block together (7 evaluations instead of 37 on MiniLM).
    By default the probe uses the lowest width of at least 3 bits: symmetric 2 bits is ternary, and a
    probe that wrecks the model saturates the loss and stops ranking layers.
    """
    variant = variant or space.variants()[0]
    levels = space.levels(variant)
    high = levels[-1]
    low = low_bits if low_bits is not None else next((b for b in levels if b >= 3), levels[0])
    base = score(space.build(high, variant))
    keys = [group(s) if group else s.name for s in space.specs]
    rise: dict[str, float] = {}
    for key in dict.fromkeys(keys):  # first-seen order: deterministic
        bits = [low if k == key else high for k in keys]
        rise[key] = (score(space.build(bits, variant)) - base) / keys.count(key)
    values = tuple(max(rise[k], _FLOOR) for k in keys)
    return Sensitivity(tuple(s.name for s in space.specs), values, low, "loss")


@torch.no_grad()
def weight_sensitivity(
    model: nn.Module, specs: Sequence[LayerSpec], bits: int = 2, scheme: Scheme = Scheme.SYMMETRIC
) -> Sensitivity:
    """Relative squared rounding error ||W - Q(W)||^2 / ||W||^2 of each layer at `bits`, per channel.

    A proxy for the relative noise a layer adds to its output; layers with outlier weights score high.
    """
    values = []
    for spec in specs:
        w = model.get_submodule(spec.name).weight.detach().float()
        err = w - quantize_rtn(w, bits, scheme, None).dequantize()
        values.append(max(float(err.pow(2).sum() / w.pow(2).sum().clamp_min(1e-30)), _FLOOR))
    return Sensitivity(tuple(s.name for s in specs), tuple(values), bits, "weight")
