"""The integer merge, as pure tensor functions shared by training (straight-through) and generation.

For a layer at bit-width b with base integers W_int, base scale s0 and zero point z (MSE-clipped, from the
float fine-tune), the shipped integers are

    q = clamp(W_int + round(rho + delta), qmin, qmax),    w = s * (q - z)

where delta = alpha * B Q(c) A is in units of the grid step (or in weight units divided by s0), rho is the
rounding residual of the float weight on the base grid (0 when disabled) and s = s0 * exp(theta) is the
learned PEQA scale. Nothing is rounded after the merge: `w` is exactly what the exporter writes
(dequantize(q, s, z)). Training uses the same functions with a straight-through estimator through round
and clamp, so the forward it optimises is the forward that ships, bit for bit.
"""

from __future__ import annotations

import torch

from toolchain.quant.core import QuantizedWeight, expand_groups, int_range, quantize_with


def per_weight(t: torch.Tensor, in_features: int, block_size: int | None) -> torch.Tensor:
    """A per-group (out, G) tensor made to broadcast against (out, in): itself when per-channel (G = 1, no
    copy), else repeated along the input dimension. Values equal core.expand_groups', so results match."""
    return t if block_size is None else expand_groups(t, in_features, block_size)


def low_rank_delta(a: torch.Tensor, b: torch.Tensor, q: torch.Tensor, rank: int) -> torch.Tensor:
    """B[:, :k] Q[:k, :k] A[:k] for the first k = rank components (DyLoRA nesting): (out, in)."""
    return b[:, :rank] @ (q[:rank, :rank] @ a[:rank])


def rounding_residual(w: torch.Tensor, base: QuantizedWeight) -> torch.Tensor:
    """w / s0 + z - W_int, clamped to [-0.5, 0.5]: where the float weight sits between grid points.

    Within range it is the part round() discarded; clipped weights get +-0.5, so they move inward as
    easily as weights on a rounding boundary. round(rho) == 0 everywhere (half to even), so delta = 0
    reproduces W_int exactly.
    """
    in_f = w.shape[1]
    x = w.float() / per_weight(base.scale, in_f, base.block_size)
    if base.zero_point is not None:
        x = x + per_weight(base.zero_point, in_f, base.block_size).float()
    return (x - base.q.float()).clamp(-0.5, 0.5)


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Value of `hard` (exactly: adds soft - soft == 0), gradient of `soft`."""
    return hard.detach() + (soft - soft.detach())


def merged_integers(w_int: torch.Tensor, offset: torch.Tensor, bits: int, scheme) -> torch.Tensor:
    """clamp(W_int + round(offset), qmin, qmax) as a float tensor of integers; gradient 1 w.r.t. offset."""
    qmin, qmax = int_range(bits, scheme)
    hard = torch.clamp(w_int + torch.round(offset.detach()), qmin, qmax)
    return straight_through(hard, w_int + offset)


def dequantize_float(
    q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, block_size: int | None
) -> torch.Tensor:
    """scale * (q - z) for a float tensor q of integers: the same operations as core.dequantize, so the
    training forward and the exported integers give bit-identical weights."""
    in_f = q.shape[1]
    if zero_point is not None:
        q = q - per_weight(zero_point, in_f, block_size).float()
    return q * per_weight(scale, in_f, block_size)


def to_quantized(q: torch.Tensor, scale: torch.Tensor, base: QuantizedWeight) -> QuantizedWeight:
    """Package merged integers (float tensor of exact integers) and learned scales for the exporter (CPU)."""
    return QuantizedWeight(
        q=q.detach().to(device="cpu", dtype=torch.int16),
        scale=scale.detach().float().cpu().contiguous(),
        zero_point=None if base.zero_point is None else base.zero_point.cpu(),
        bits=base.bits,
        scheme=base.scheme,
        block_size=base.block_size,
    )


def merge_then_round(base: QuantizedWeight, scale: torch.Tensor, delta_w: torch.Tensor) -> QuantizedWeight:
    """The naive path: add a float adapter to the dequantized weight, then round again onto the layer's own
    grid (scale, zero point): at low bits this erases most of the adapter's benefit (docs/design.md)."""
    merged = dequantize_float(base.q.float(), scale, base.zero_point, base.block_size) + delta_w
    return quantize_with(merged, scale, base.zero_point, base.bits, base.scheme, base.block_size)
