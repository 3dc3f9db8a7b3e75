"""Integer quantizer: hand-computed examples, integer ranges, error bounds, the MSE clipping search."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from toolchain.quant.core import (
    QuantizedWeight,
    Scheme,
    dequantize,
    expand_groups,
    int_range,
    quantize_mse,
    quantize_rtn,
    quantize_with,
)


def group_sq_error(w: torch.Tensor, qw: QuantizedWeight) -> torch.Tensor:
    """Squared reconstruction error summed per scale group, (out, G)."""
    err = (w.float() - qw.dequantize()) ** 2
    gs = w.shape[1] if qw.block_size is None else qw.block_size
    return torch.stack([g.sum(dim=1) for g in err.split(gs, dim=1)], dim=1)


# 2x4 weight with values chosen so no w/scale lands on a .5 tie (ties would make the example depend on
# round-half-even).
W2X4 = torch.tensor([[0.5, -1.0, 1.5, 0.2], [-2.0, 0.9, 0.3, -0.7]])


def test_int_range_by_hand() -> None:
    assert int_range(2, Scheme.SYMMETRIC) == (-1, 1)  # narrow range: 2-bit symmetric is ternary
    assert int_range(3, Scheme.SYMMETRIC) == (-3, 3)
    assert int_range(8, Scheme.SYMMETRIC) == (-127, 127)
    assert int_range(2, Scheme.ASYMMETRIC) == (0, 3)
    assert int_range(8, Scheme.ASYMMETRIC) == (0, 255)
    for bad in (1, 9, 0, -3):
        with pytest.raises(ValueError, match="2..8"):
            int_range(bad, Scheme.SYMMETRIC)


def test_symmetric_per_channel_3bit_by_hand() -> None:
    """qmax 3. Row 0: absmax 1.5 -> scale 0.5, w/s = [1, -2, 3, 0.4].

    Row 1: absmax 2 -> scale 2/3, w/s = [-3, 1.35, 0.45, -1.05].
    """
    qw = quantize_rtn(W2X4, 3, Scheme.SYMMETRIC)
    assert qw.q.dtype == torch.int16 and qw.scale.dtype == torch.float32
    assert qw.zero_point is None and qw.block_size is None and qw.bits == 3
    assert qw.q.tolist() == [[1, -2, 3, 0], [-3, 1, 0, -1]]
    torch.testing.assert_close(qw.scale, torch.tensor([[0.5], [2 / 3]]))
    expected = torch.tensor([[0.5, -1.0, 1.5, 0.0], [-2.0, 2 / 3, 0.0, -2 / 3]])
    torch.testing.assert_close(qw.dequantize(), expected)


def test_asymmetric_per_channel_3bit_by_hand() -> None:
    """Range [0, 7], the min/max range always holding 0.

    Row 0: lo -1, hi 1.5 -> scale 2.5/7, zp round(2.8) = 3, w/s = [1.4, -2.8, 4.2, .56] -> q = [4, 0, 7, 4].
    Row 1: lo -2, hi 0.9 -> scale 2.9/7, zp round(4.83) = 5,
    w/s = [-4.83, 2.17, .72, -1.69] -> q = [0, 7, 6, 3].
    """
    qw = quantize_rtn(W2X4, 3, Scheme.ASYMMETRIC)
    assert qw.zero_point is not None and qw.zero_point.dtype == torch.int16
    assert qw.zero_point.tolist() == [[3], [5]]
    assert qw.q.tolist() == [[4, 0, 7, 4], [0, 7, 6, 3]]
    s = torch.tensor([[2.5 / 7], [2.9 / 7]])
    torch.testing.assert_close(qw.scale, s)
    expected = s * (torch.tensor([[4, 0, 7, 4], [0, 7, 6, 3]]) - torch.tensor([[3], [5]]))
    torch.testing.assert_close(qw.dequantize(), expected)


def test_blocked_ragged_last_block_by_hand() -> None:
    """2x5 at block 2: groups [0:2], [2:4], [4:5]; the last holds one real element and its own scale.

    Row 0: absmax per block 1.5, 1.2, 0.9 -> scales 0.5, 0.4, 0.3; q = [1, -3 | 3, 1 | -3].
    Row 1: absmax 0.3, 0.3, 2.4 -> scales 0.1, 0.1, 0.8; q = [1, 3 | -3, 0 | 3].
    """
    w = torch.tensor([[0.6, -1.5, 1.2, 0.3, -0.9], [0.1, 0.3, -0.3, 0.0, 2.4]])
    qw = quantize_rtn(w, 3, Scheme.SYMMETRIC, block_size=2)
    assert qw.scale.shape == (2, 3) and qw.block_size == 2
    torch.testing.assert_close(qw.scale, torch.tensor([[0.5, 0.4, 0.3], [0.1, 0.1, 0.8]]))
    assert qw.q.tolist() == [[1, -3, 3, 1, -3], [1, 3, -3, 0, 3]]
    expected = torch.tensor([[0.5, -1.5, 1.2, 0.4, -0.9], [0.1, 0.3, -0.3, 0.0, 2.4]])
    torch.testing.assert_close(qw.dequantize(), expected)


def test_blocked_asymmetric_ragged_block_by_hand() -> None:
    """2-bit asymmetric (range [0, 3]) at block 3 over 4 inputs: the one-element last block gets its own grid.

    Block 0: [-1, 1] -> scale 2/3, zp round(1.5) = 2 (half to even). Block 1: [0, 0.6] -> scale 0.2, zp 0.
    """
    w = torch.tensor([[-1.0, 1.0, 0.3, 0.6]])  # block 3: [-1, 1, .3] and [.6]
    qw = quantize_rtn(w, 2, Scheme.ASYMMETRIC, block_size=3)
    torch.testing.assert_close(qw.scale, torch.tensor([[2.0 / 3, 0.6 / 3]]))
    assert qw.zero_point.tolist() == [[2, 0]]  # round(1 / (2/3)) = round(1.5) = 2 (half to even)
    assert qw.q[0, 3].item() == 3  # 0.6 / 0.2 = 3: the top of [0, 3]


def test_expand_groups_and_dequantize_formula() -> None:
    scale = torch.tensor([[1.0, 2.0, 3.0]])
    assert expand_groups(scale, 5, 2).tolist() == [[1.0, 1.0, 2.0, 2.0, 3.0]]
    assert expand_groups(torch.tensor([[4.0]]), 3, None).tolist() == [[4.0, 4.0, 4.0]]
    q = torch.tensor([[0, 1, 2, 3, 4]], dtype=torch.int16)
    zp = torch.tensor([[1, 2, 2]], dtype=torch.int16)
    assert dequantize(q, scale, zp, 2).tolist() == [[-1.0, 0.0, 0.0, 2.0, 6.0]]  # s * (q - zp) per group
    assert dequantize(q, scale, None, 2).tolist() == [[0.0, 1.0, 4.0, 6.0, 12.0]]


def test_quantize_with_reproduces_given_grid() -> None:
    """quantize_with on a weight's own scales gives back the same integers (the merge path relies on it)."""
    qw = quantize_rtn(W2X4, 4, Scheme.ASYMMETRIC, block_size=3)
    again = quantize_with(qw.dequantize(), qw.scale, qw.zero_point, 4, Scheme.ASYMMETRIC, 3)
    assert torch.equal(again.q, qw.q)


def test_mse_clips_an_outlier_by_hand() -> None:
    """Ten weights at +-1 and one at 1.4, 2-bit symmetric (levels -s, 0, s).

    Round-to-nearest: s = 1.4, every +-1 becomes +-1.4: squared error 10 * 0.16 = 1.6.
    Clipping: s near 1 makes the ten exact and costs (1.4 - s)^2 on the outlier; the best grid point
    (ratio 1 - 13 * 0.8 / 39) gives s = 1.0267 and error 0.147.
    """
    w = torch.tensor([[1.0, -1.0] * 5 + [1.4]])
    rtn = quantize_rtn(w, 2)
    mse = quantize_mse(w, 2)
    assert group_sq_error(w, rtn).item() == pytest.approx(1.6, rel=1e-5)
    assert group_sq_error(w, mse).item() == pytest.approx(0.1466, abs=5e-4)
    assert mse.scale.item() == pytest.approx(1.4 * (1 - 13 * 0.8 / 39), rel=1e-5)


@pytest.mark.parametrize("scheme", list(Scheme))
@pytest.mark.parametrize("block_size", [None, 4])
@pytest.mark.parametrize("quantize", [quantize_rtn, quantize_mse])
def test_all_zero_and_constant_weights_stay_finite(scheme: Scheme, block_size: int | None, quantize) -> None:
    for w in (torch.zeros(3, 10), torch.full((3, 10), -0.25)):
        for bits in (2, 3, 8):
            qw = quantize(w, bits, scheme, block_size)
            assert torch.isfinite(qw.scale).all() and (qw.scale > 0).all()
            deq = qw.dequantize()
            assert torch.isfinite(deq).all()
            if not w.any():
                assert not deq.any()  # zero is exactly representable in both schemes
            else:
                torch.testing.assert_close(deq, w)  # a constant group is its own absmax


# ---- properties over random weights -------------------------------------------------------------------

weights = st.tuples(st.integers(1, 5), st.integers(1, 37)).flatmap(
    lambda shape: arrays(
        np.float32,
        shape,
        elements=st.floats(-50, 50, width=32, allow_subnormal=False),
    )
)
block_sizes = st.sampled_from([None, 2, 3, 8, 16, 64])


def _check_ranges(qw: QuantizedWeight, w: torch.Tensor, bits: int, scheme: Scheme, block: int | None) -> None:
    qmin, qmax = int_range(bits, scheme)
    groups = math.ceil(w.shape[1] / (w.shape[1] if block is None else block))
    assert qw.q.shape == w.shape and qw.q.dtype == torch.int16
    assert int(qw.q.min()) >= qmin and int(qw.q.max()) <= qmax
    assert qw.scale.shape == (w.shape[0], groups) and qw.scale.dtype == torch.float32
    assert torch.isfinite(qw.scale).all() and (qw.scale > 0).all()
    if scheme is Scheme.SYMMETRIC:
        assert qw.zero_point is None
    else:
        assert qw.zero_point.shape == qw.scale.shape and qw.zero_point.dtype == torch.int16
        assert int(qw.zero_point.min()) >= qmin and int(qw.zero_point.max()) <= qmax


def _clip_bounds(qw: QuantizedWeight, in_f: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-weight [low, high] of the representable range: s * (qmin - zp), s * (qmax - zp)."""
    qmin, qmax = int_range(qw.bits, qw.scheme)
    s = expand_groups(qw.scale, in_f, qw.block_size)
    z = 0.0 if qw.zero_point is None else expand_groups(qw.zero_point, in_f, qw.block_size).float()
    return s * (qmin - z), s * (qmax - z)


@settings(max_examples=150, deadline=None)
@given(w=weights, bits=st.integers(2, 8), scheme=st.sampled_from(list(Scheme)), block=block_sizes)
def test_rtn_ranges_and_half_step_error(w: np.ndarray, bits: int, scheme: Scheme, block: int | None) -> None:
    """Full-range RTN: every weight is inside the grid, so its error is at most half a step."""
    wt = torch.from_numpy(w)
    qw = quantize_rtn(wt, bits, scheme, block)
    _check_ranges(qw, wt, bits, scheme, block)
    s = expand_groups(qw.scale, wt.shape[1], block)
    err = (qw.dequantize() - wt).abs()
    assert (err <= s / 2 + 1e-5 * s + 1e-6 * wt.abs()).all()


@settings(max_examples=60, deadline=None)
@given(w=weights, bits=st.integers(2, 8), scheme=st.sampled_from(list(Scheme)), block=block_sizes)
def test_mse_ranges_error_bounds_and_never_worse(w: np.ndarray, bits: int, scheme: Scheme, block: int | None) -> None:
    """Clipped RTN: inside the clip range error <= half a step, outside it lands on the range's edge;
    and the searched clip is never worse than the full range, group by group."""
    wt = torch.from_numpy(w)
    rtn, mse = quantize_rtn(wt, bits, scheme, block), quantize_mse(wt, bits, scheme, block)
    _check_ranges(mse, wt, bits, scheme, block)
    s = expand_groups(mse.scale, wt.shape[1], block)
    tol = 1e-5 * s + 1e-6 * wt.abs()
    low, high = _clip_bounds(mse, wt.shape[1])
    deq = mse.dequantize()
    inside = (wt >= low) & (wt <= high)
    assert ((deq - wt).abs()[inside] <= (s / 2 + tol)[inside]).all()
    torch.testing.assert_close(deq[wt > high], high[wt > high])
    torch.testing.assert_close(deq[wt < low], low[wt < low])
    err_rtn, err_mse = group_sq_error(wt, rtn), group_sq_error(wt, mse)
    assert (err_mse <= err_rtn * (1 + 1e-6) + 1e-12).all()
