"""Containers: properties, LSB-first packing checked by hand and against onnx's own packer."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from toolchain.quant.containers import Container, pack
from toolchain.quant.core import Scheme, int_range


def unpack(data: np.ndarray, container: Container, count: int) -> np.ndarray:
    """onnx's reading of `pack`'s bytes (what onnxruntime loads): the first `count` integers, int64."""
    tensor = helper.make_tensor(
        "w", container.onnx_type, [count], data.tobytes()[: -(-count * container.bits // 8)], raw=True
    )
    return numpy_helper.to_array(tensor).astype(np.int64).reshape(-1)


ODD_AND_EVEN_LENGTHS = [1, 2, 3, 4, 5, 7, 8, 9, 33, 130]

# Container -> (bits, signed, range, onnx type, min opset): written out by hand from the ONNX spec and
# docs/onnxruntime.md.
EXPECTED = {
    Container.INT8: (8, True, (-128, 127), TensorProto.INT8, 13),
    Container.UINT8: (8, False, (0, 255), TensorProto.UINT8, 13),
    Container.INT4: (4, True, (-8, 7), TensorProto.INT4, 21),
    Container.UINT4: (4, False, (0, 15), TensorProto.UINT4, 21),
    Container.INT2: (2, True, (-2, 1), TensorProto.INT2, 25),
    Container.UINT2: (2, False, (0, 3), TensorProto.UINT2, 25),
}

ML_DTYPE = {
    Container.INT8: np.int8,
    Container.UINT8: np.uint8,
    Container.INT4: ml_dtypes.int4,
    Container.UINT4: ml_dtypes.uint4,
    Container.INT2: ml_dtypes.int2,
    Container.UINT2: ml_dtypes.uint2,
}


def _widths_held(c: Container) -> list[tuple[int, Scheme]]:
    """Every (bit-width, scheme) whose integer range fits container `c`."""
    return [(b, s) for b in range(2, 9) for s in Scheme if c.holds(*int_range(b, s))]


def test_container_properties() -> None:
    assert set(EXPECTED) == set(Container)
    for c, expected in EXPECTED.items():
        assert (c.bits, c.signed, c.value_range, c.onnx_type, c.min_opset) == expected


def test_widths_held_by_hand() -> None:
    """Symmetric b-bit needs [-(2^(b-1)-1), 2^(b-1)-1]; asymmetric needs [0, 2^b-1].

    A signed container also holds the smaller asymmetric ranges ([0, 7] fits INT4); unsigned ones never
    hold a symmetric range (it has negatives).
    """
    held = {c: {(b, str(s)) for b, s in _widths_held(c)} for c in Container}
    sym = {(b, "symmetric") for b in range(2, 9)}
    asym = {(b, "asymmetric") for b in range(2, 9)}
    assert held[Container.INT2] == {(2, "symmetric")}
    assert held[Container.UINT2] == {(2, "asymmetric")}
    assert held[Container.INT4] == {x for x in sym if x[0] <= 4} | {x for x in asym if x[0] <= 3}
    assert held[Container.UINT4] == {x for x in asym if x[0] <= 4}
    assert held[Container.INT8] == sym | {x for x in asym if x[0] <= 7}
    assert held[Container.UINT8] == asym


@pytest.mark.parametrize(
    "container, values, expected",
    [
        (Container.INT8, [-1, 127, -128, 0], [0xFF, 0x7F, 0x80, 0x00]),
        (Container.UINT8, [0, 255, 17], [0x00, 0xFF, 0x11]),
        # element 0 in the low nibble: 1 -> 0x1, -2 -> 0xE (two's complement nibble); 3 alone, padded.
        (Container.INT4, [1, -2, 3], [0xE1, 0x03]),
        (Container.INT4, [-8, 7], [0x78]),
        (Container.UINT4, [15, 0, 7, 8], [0x0F, 0x87]),
        # 2-bit fields at shifts 0, 2, 4, 6: 1 | 2<<2 | 3<<4 | 0<<6 = 57.
        (Container.UINT2, [1, 2, 3, 0, 1], [57, 0x01]),
        # -2 -> 0b10, -1 -> 0b11: 1 | 2<<2 | 0<<4 | 3<<6 = 201.
        (Container.INT2, [1, -2, 0, -1, 1], [201, 0x01]),
        (Container.INT2, [-2, -2, -2, -2], [0xAA]),
    ],
)
def test_pack_bytes_by_hand(container: Container, values: list[int], expected: list[int]) -> None:
    packed = pack(np.array(values), container)
    assert packed.dtype == np.uint8
    assert packed.tolist() == expected
    assert unpack(packed, container, len(values)).tolist() == values


@pytest.mark.parametrize("container", list(Container))
@pytest.mark.parametrize("n", ODD_AND_EVEN_LENGTHS)
def test_round_trip_every_width_held(container: Container, n: int) -> None:
    """Random integers of every bit-width the container can hold survive pack -> unpack exactly."""
    rng = np.random.default_rng(n)
    for bits, scheme in _widths_held(container):
        lo, hi = int_range(bits, scheme)
        values = rng.integers(lo, hi + 1, size=n)
        values[0] = lo  # the extremes are where sign extension goes wrong
        values[-1] = hi
        packed = pack(values, container)
        assert packed.size == -(-n * container.bits // 8)  # ceil(n * bits / 8): no extra bytes
        out = unpack(packed, container, n)
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out, values)


@pytest.mark.parametrize("container", list(Container))
def test_round_trip_full_container_range_2d(container: Container) -> None:
    """Every value of the container, as a (rows, cols) matrix with an odd element count: row-major order."""
    lo, hi = container.value_range
    values = np.arange(lo, hi + 1)
    values = np.concatenate([values, values[::-1], values[:1]])  # odd total
    matrix = values[: (values.size // 3) * 3].reshape(3, -1) if values.size >= 3 else values.reshape(1, -1)
    out = unpack(pack(matrix, container), container, matrix.size)
    np.testing.assert_array_equal(out.reshape(matrix.shape), matrix)


@pytest.mark.parametrize("container", list(Container))
@pytest.mark.parametrize("n", [1, 3, 4, 7, 17])
def test_pack_matches_onnx_packer(container: Container, n: int) -> None:
    """Our bytes equal onnx's: numpy_helper.from_array raw bytes and helper.make_tensor's packed words."""
    lo, hi = container.value_range
    values = np.random.default_rng(100 + n).integers(lo, hi + 1, size=n)
    ours = pack(values, container)

    raw = numpy_helper.from_array(values.astype(ML_DTYPE[container]), name="w")
    assert raw.data_type == container.onnx_type
    assert ours.tobytes() == raw.raw_data

    made = helper.make_tensor("w", container.onnx_type, [n], values.tolist())
    if container.bits < 8:  # sub-byte types: make_tensor packs into int32_data, one byte per entry
        assert ours.tolist() == list(made.int32_data)
    # and onnx reads our bytes back to the same integers
    back = numpy_helper.to_array(helper.make_tensor("w", container.onnx_type, [n], ours.tobytes(), raw=True))
    np.testing.assert_array_equal(back.astype(np.int64), values)


@pytest.mark.parametrize("container", list(Container))
def test_out_of_range_raises(container: Container) -> None:
    lo, hi = container.value_range
    for bad in (lo - 1, hi + 1):
        with pytest.raises(ValueError, match=str(container)):
            pack(np.array([0, bad, 0]), container)


def test_empty_packs_to_nothing() -> None:
    for c in Container:
        assert pack(np.array([], dtype=np.int64), c).size == 0
        assert unpack(np.array([], dtype=np.uint8), c, 0).size == 0


@pytest.mark.parametrize("container", list(Container))
def test_non_integer_values_raise(container: Container) -> None:
    """A float that is not an integer must not be truncated into the container."""
    with pytest.raises(ValueError, match="integers"):
        pack(np.array([0.0, 0.7]), container)
    with pytest.raises(ValueError):
        pack(np.array([0.0, np.nan]), container)
    # integral floats (e.g. torch.round output) are fine
    np.testing.assert_array_equal(unpack(pack(np.array([1.0, 0.0]), container), container, 2), [1, 0])
