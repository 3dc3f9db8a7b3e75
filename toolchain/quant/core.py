"""Pure tensor functions: integer quantization of a Linear weight, dequantization, clipping search.

Conventions (shared with the exporter, which writes exactly these integers):
- A weight is (out_features, in_features). Groups run along the input dimension:

  | block_size | groups per output row    | scale / zero-point shape |
  |------------|--------------------------|--------------------------|
  | None       | 1 (per output channel)   | (out, 1)                 |
  | B          | ceil(in / B)             | (out, ceil(in / B))      |

  A ragged last block is quantized on its own elements only (zero padding never enters a range).
- symmetric: integers in the narrow range [-(2^(b-1) - 1), 2^(b-1) - 1], zero point 0 (so 2 bits is ternary);
  asymmetric: integers in [0, 2^b - 1] with an integer zero point per group (4 levels at 2 bits).
- w ~= scale * (q - zero_point); scales are fp32 (fp16 scales break onnxruntime's fusion, docs/onnxruntime.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import torch

_MIN_SCALE = 1e-12  # keeps an all-zero group finite; its integers are then all zero-point


class Scheme(StrEnum):
    SYMMETRIC = "symmetric"
    ASYMMETRIC = "asymmetric"


def int_range(bits: int, scheme: Scheme) -> tuple[int, int]:
    """Integer range (inclusive) of `bits`-bit weights under `scheme`."""
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in 2..8, got {bits}")
    if scheme is Scheme.SYMMETRIC:
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


@dataclass(frozen=True)
class QuantizedWeight:
    """Integers, fp32 scales and optional zero points of one (out, in) weight."""

    q: torch.Tensor  # (out, in) int16: integers on the grid, unpacked
    scale: torch.Tensor  # (out, G) float32
    zero_point: torch.Tensor | None  # (out, G) int16, None for symmetric
    bits: int
    scheme: Scheme
    block_size: int | None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.q.shape)  # type: ignore[return-value]

    def dequantize(self) -> torch.Tensor:
        return dequantize(self.q, self.scale, self.zero_point, self.block_size)


def group_size(in_features: int, block_size: int | None) -> int:
    return in_features if block_size is None else block_size


def expand_groups(t: torch.Tensor, in_features: int, block_size: int | None) -> torch.Tensor:
    """Repeat a per-group (out, G) tensor to per-weight (out, in) along the input dimension."""
    gs = group_size(in_features, block_size)
    return t.repeat_interleave(gs, dim=1)[:, :in_features]


def _grouped(w: torch.Tensor, block_size: int | None) -> torch.Tensor:
    """(out, in) -> (out, G, gs), zero-padded; callers mask the padding out of ranges."""
    out_f, in_f = w.shape
    gs = group_size(in_f, block_size)
    pad = (-in_f) % gs
    return torch.nn.functional.pad(w, (0, pad)).reshape(out_f, -1, gs)


def _group_min_max(w: torch.Tensor, block_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group min and max over real elements only, each (out, G)."""
    wg = _grouped(w, block_size)
    valid = _grouped(torch.ones_like(w, dtype=torch.bool), block_size)
    lo = wg.masked_fill(~valid, math.inf).amin(-1)
    hi = wg.masked_fill(~valid, -math.inf).amax(-1)
    return lo, hi


def scales_for(
    w: torch.Tensor,
    bits: int,
    scheme: Scheme,
    block_size: int | None,
    clip_ratio: torch.Tensor | float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale (and zero point) per group for a range shrunk by `clip_ratio` (scalar or (out, G))."""
    lo, hi = _group_min_max(w.float(), block_size)
    return _range_scales(lo, hi, bits, scheme, clip_ratio)


def _range_scales(
    lo: torch.Tensor, hi: torch.Tensor, bits: int, scheme: Scheme, clip_ratio: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scales (and zero points) of group ranges [lo, hi] shrunk by `clip_ratio` (broadcasts)."""
    qmin, qmax = int_range(bits, scheme)
    if scheme is Scheme.SYMMETRIC:
        amax = torch.maximum(lo.abs(), hi.abs()) * clip_ratio
        return (amax / qmax).clamp_min(_MIN_SCALE), None
    lo = lo.clamp(max=0) * clip_ratio  # the range always holds 0, so zero is exactly representable
    hi = hi.clamp(min=0) * clip_ratio
    scale = ((hi - lo) / (qmax - qmin)).clamp_min(_MIN_SCALE)
    zero_point = torch.round(-lo / scale).clamp(qmin, qmax).to(torch.int16)
    return scale, zero_point


def quantize_with(
    w: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    bits: int,
    scheme: Scheme,
    block_size: int | None,
) -> QuantizedWeight:
    """Round-to-nearest onto the grid given by `scale` / `zero_point`, clamped to the integer range."""
    in_f = w.shape[1]
    qmin, qmax = int_range(bits, scheme)
    s = expand_groups(scale, in_f, block_size)
    z = 0 if zero_point is None else expand_groups(zero_point, in_f, block_size).float()
    q = torch.clamp(torch.round(w.float() / s) + z, qmin, qmax).to(torch.int16)
    return QuantizedWeight(q, scale.float(), zero_point, bits, scheme, block_size)


def quantize_rtn(
    w: torch.Tensor,
    bits: int,
    scheme: Scheme = Scheme.SYMMETRIC,
    block_size: int | None = None,
    clip_ratio: torch.Tensor | float = 1.0,
) -> QuantizedWeight:
    """Plain round-to-nearest over the full (absmax or min/max) range, optionally clipped."""
    scale, zero_point = scales_for(w, bits, scheme, block_size, clip_ratio)
    return quantize_with(w, scale, zero_point, bits, scheme, block_size)


def dequantize(
    q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, block_size: int | None
) -> torch.Tensor:
    """scale * (q - zero_point), per group, as an (out, in) float32 tensor."""
    in_f = q.shape[1]
    qf = q.float()
    if zero_point is not None:
        qf = qf - expand_groups(zero_point, in_f, block_size).float()
    return qf * expand_groups(scale, in_f, block_size)


def quantize_mse(
    w: torch.Tensor,
    bits: int,
    scheme: Scheme = Scheme.SYMMETRIC,
    block_size: int | None = None,
    grid: int = 40,
    min_ratio: float = 0.2,
) -> QuantizedWeight:
    """Round-to-nearest with the clipping ratio searched per group to minimise squared error.

    This is PEQA's better-than-naive initialisation: at 2-3 bits, clipping outliers costs less than the
    step size a full range would need (docs/onnxruntime.md: 91 % vs chance at 2 bits on MiniLM). Ratios are tried
    from 1.0 down; ties keep the larger ratio. Evaluated a chunk of ratios at a time, vectorised.
    """
    ratios = torch.linspace(1.0, min_ratio, grid)
    errors = torch.cat([_clip_errors(w, bits, scheme, block_size, chunk) for chunk in ratios.split(_chunk(w))])
    best_ratio = ratios[errors.argmin(0)]  # (out, G); argmin takes the first (largest) ratio on ties
    return quantize_rtn(w, bits, scheme, block_size, best_ratio)


CLIP_CHUNK_ELEMENTS = 1 << 22  # per vectorised step of the clip search; bench/quant_base_timing.py compares sizes


def _chunk(w: torch.Tensor) -> int:
    """Ratios per vectorised step, keeping each (R, out, G, gs) temporary near CLIP_CHUNK_ELEMENTS."""
    return max(1, CLIP_CHUNK_ELEMENTS // max(1, w.numel()))


def _clip_errors(
    w: torch.Tensor, bits: int, scheme: Scheme, block_size: int | None, ratios: torch.Tensor
) -> torch.Tensor:
    """Squared error per group for each clipping ratio: (R, out, G).

    Computed in units of the step, scale^2 * sum((q - z - w / scale)^2), in place on one (R, out, G, gs)
    temporary besides w / scale: the same rounding as quantize_with, in fewer passes over memory.
    """
    qmin, qmax = int_range(bits, scheme)
    wf = w.float()
    lo, hi = _group_min_max(wf, block_size)  # (out, G)
    scale, zero_point = _range_scales(lo, hi, bits, scheme, ratios[:, None, None])  # (R, out, G)
    x = _grouped(wf, block_size)[None] / scale[..., None]  # (R, out, G, gs); zero padding stays exactly 0
    q = torch.round(x)
    if zero_point is None:
        q.clamp_(qmin, qmax)
    else:
        z = zero_point.float()[..., None]
        q.add_(z).clamp_(qmin, qmax).sub_(z)
    return q.sub_(x).square_().sum(-1) * scale.square()
