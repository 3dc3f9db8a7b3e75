"""Integer containers a device stores weights in, and packing into ONNX's byte layout.

ONNX stores sub-byte integers packed LSB-first in flattened row-major order: element 0 goes to the lowest
bits of byte 0. An odd tail is padded with zero bits (docs/onnxruntime.md, checked against onnx's own packer in tests).
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
from onnx import TensorProto


class Container(StrEnum):
    INT8 = "int8"
    UINT8 = "uint8"
    INT4 = "int4"
    UINT4 = "uint4"
    INT2 = "int2"
    UINT2 = "uint2"

    @property
    def bits(self) -> int:
        return int(self.value.removeprefix("u").removeprefix("int"))

    @property
    def signed(self) -> bool:
        return not self.value.startswith("u")

    @property
    def value_range(self) -> tuple[int, int]:
        if self.signed:
            return -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        return 0, 2**self.bits - 1

    @property
    def onnx_type(self) -> int:
        return _ONNX_TYPES[self]

    @property
    def min_opset(self) -> int:
        """Smallest ONNX opset whose DequantizeLinear accepts this container (docs/onnxruntime.md)."""
        return {8: 13, 4: 21, 2: 25}[self.bits]

    def holds(self, lo: int, hi: int) -> bool:
        cmin, cmax = self.value_range
        return cmin <= lo and hi <= cmax


_ONNX_TYPES = {
    Container.INT8: TensorProto.INT8,
    Container.UINT8: TensorProto.UINT8,
    Container.INT4: TensorProto.INT4,
    Container.UINT4: TensorProto.UINT4,
    Container.INT2: TensorProto.INT2,
    Container.UINT2: TensorProto.UINT2,
}


def pack(values: np.ndarray, container: Container) -> np.ndarray:
    """Pack integers into `container`'s storage bytes (uint8 array), LSB-first, row-major.

    Raises ValueError when a value is not an integer or does not fit the container: packing never
    truncates or wraps silently.
    """
    raw = np.asarray(values).reshape(-1)
    if raw.size and not np.issubdtype(raw.dtype, np.integer) and not np.array_equal(raw, np.round(raw)):
        raise ValueError(f"{container}: values must be integers, got non-integer {raw.dtype} values")
    flat = raw.astype(np.int64)
    lo, hi = container.value_range
    if flat.size and (flat.min() < lo or flat.max() > hi):
        raise ValueError(f"values [{flat.min()}, {flat.max()}] do not fit {container} [{lo}, {hi}]")
    if container.bits == 8:
        return flat.astype(np.int8 if container.signed else np.uint8).view(np.uint8)
    per_byte = 8 // container.bits
    mask = (1 << container.bits) - 1
    pad = (-flat.size) % per_byte
    fields = (np.concatenate([flat, np.zeros(pad, np.int64)]) & mask).reshape(-1, per_byte)  # (n_bytes, k)
    shifts = np.arange(per_byte, dtype=np.int64) * container.bits
    return (fields << shifts).sum(axis=1).astype(np.uint8)
