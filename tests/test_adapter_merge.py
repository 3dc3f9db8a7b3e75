"""The integer merge's pure functions against hand-computed values."""

from __future__ import annotations

import torch

from toolchain.adapter.merge import (
    dequantize_float,
    low_rank_delta,
    merge_then_round,
    merged_integers,
    rounding_residual,
    straight_through,
)
from toolchain.quant.core import Scheme, quantize_mse, quantize_rtn


def test_merged_integers_round_clamp_and_pass_gradient_straight_through():
    w_int = torch.tensor([[0.0, 1.0, -1.0, 0.0]])
    offset = torch.tensor([[0.6, -0.4, -2.0, 3.0]], requires_grad=True)
    q = merged_integers(w_int, offset, bits=2, scheme=Scheme.SYMMETRIC)  # range [-1, 1]
    assert q.tolist() == [[1.0, 1.0, -1.0, 1.0]]
    q.sum().backward()
    assert offset.grad.tolist() == [[1.0, 1.0, 1.0, 1.0]]


def test_merged_integers_asymmetric_range():
    q = merged_integers(torch.tensor([[0.0, 3.0]]), torch.tensor([[-1.0, 1.0]]), bits=2, scheme=Scheme.ASYMMETRIC)
    assert q.tolist() == [[0.0, 3.0]]


def test_straight_through_value_is_exactly_hard():
    soft = torch.tensor([0.1234567, 1e-8, 12345.678], requires_grad=True)
    hard = torch.round(soft)
    out = straight_through(hard, soft)
    assert torch.equal(out, hard)


def test_zero_offset_plus_residual_reproduces_base_integers():
    torch.manual_seed(0)
    w = torch.randn(16, 40)
    for scheme in Scheme:
        for bits in (2, 3, 8):
            for block in (None, 8):
                base = quantize_mse(w, bits, scheme, block)
                rho = rounding_residual(w, base)
                assert rho.abs().max() <= 0.5
                q = merged_integers(base.q.float(), rho, bits, scheme)
                assert torch.equal(q.to(torch.int16), base.q)


def test_residual_is_the_discarded_fraction():
    w = torch.tensor([[0.26, -0.74, 5.0, 0.0]])
    base = quantize_rtn(w, 3, Scheme.SYMMETRIC, clip_ratio=0.2)  # amax 5 * 0.2 = 1.0 -> scale 1/3
    rho = rounding_residual(w, base)
    # 0.26*3 = 0.78 -> q 1, residual -0.22; -0.74*3 = -2.22 -> -2, -0.22; 15 -> clipped to 3, +0.5
    torch.testing.assert_close(rho, torch.tensor([[-0.22, -0.22, 0.5, 0.0]]), atol=1e-5, rtol=0)


def test_low_rank_delta_uses_leading_components_only():
    torch.manual_seed(0)
    a, b, q = torch.randn(4, 6), torch.randn(5, 4), torch.randn(4, 4)
    full = b @ q @ a
    torch.testing.assert_close(low_rank_delta(a, b, q, 4), full)
    torch.testing.assert_close(low_rank_delta(a, b, q, 2), b[:, :2] @ q[:2, :2] @ a[:2])


def test_dequantize_float_matches_core_dequantize_bitwise():
    torch.manual_seed(1)
    qw = quantize_mse(torch.randn(8, 20), 3, Scheme.ASYMMETRIC, 8)
    assert torch.equal(dequantize_float(qw.q.float(), qw.scale, qw.zero_point, qw.block_size), qw.dequantize())


def test_merge_then_round_on_base_grid():
    base = quantize_rtn(torch.tensor([[1.0, -1.0, 0.5, 0.0]]), 3, Scheme.SYMMETRIC)  # scale 1/3
    assert base.q.tolist() == [[3, -3, 2, 0]]
    delta = torch.tensor([[0.1, 0.2, -0.6, 0.17]])
    out = merge_then_round(base, base.scale, delta)
    # (1.1, -0.8, 0.0667, 0.17) * 3 = (3.3, -2.4, 0.2, 0.51) -> clamp (3, -2, 0, 1)
    assert out.q.tolist() == [[3, -2, 0, 1]]
