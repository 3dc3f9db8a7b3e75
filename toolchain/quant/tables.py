"""Embedding tables as integers: quantize a (vocab, hidden) table for an EmbeddingQuant, pack and unpack its
bit fields, and what it costs (docs/embeddings.md).

A table is quantized like a Linear weight with rows as output channels (toolchain.quant.core): per row or in
blocks along the hidden dimension, MSE-clipped below 8 bits, round to nearest at 8. Scales are stored as
fp16 and the integers are rounded against the fp16 scale, so they are exact for the scale that ships.

Below 8 bits the integers are stored as unsigned fields, `field_bits` wide, packed low bits first into
bytes (entry j of a row in byte j // k at bit (j % k) * field_bits, k = 8 // field_bits): symmetric
integers q are offset by 2^(bits-1) into [1, 2^bits - 1]; asymmetric ones are stored as they are, with
their zero points packed the same way, one row of fields per table row.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from toolchain.profiles import EmbeddingQuant
from toolchain.quant.core import QuantizedWeight, Scheme, quantize_mse, quantize_with, scales_for

FP16_TINY = float(np.finfo(np.float16).tiny)  # smallest normal fp16: a scale never underflows
TABLE_SCALE_BITS = 16  # fp16 scales: a gathered scale feeds no fused kernel, so fp16 costs nothing at run time


def quantize_table(table: torch.Tensor, spec: EmbeddingQuant) -> QuantizedWeight:
    """Integers and fp16-exact scales (and zero points) of a (vocab, hidden) table."""
    w = table.detach().float()
    if spec.bits == 8:
        scale, zero_point = scales_for(w, 8, Scheme.SYMMETRIC, None)
    else:
        first = quantize_mse(w, spec.bits, spec.scheme, spec.block_size)
        scale, zero_point = first.scale, first.zero_point
    scale = scale.clamp(min=FP16_TINY).half().float()
    return quantize_with(w, scale, zero_point, spec.bits, spec.scheme, spec.block_size)


def offset(spec: EmbeddingQuant) -> int:
    """What is added to a symmetric integer to store it as an unsigned field (0 when asymmetric)."""
    return 2 ** (spec.bits - 1) if spec.scheme is Scheme.SYMMETRIC else 0


def pack_fields(values: np.ndarray, field_bits: int) -> np.ndarray:
    """(rows, n) unsigned values < 2^field_bits -> (rows, ceil(n * field_bits / 8)) uint8, low bits first."""
    k = 8 // field_bits
    rows, n = values.shape
    padded = np.zeros((rows, math.ceil(n / k) * k), dtype=np.uint8)
    padded[:, :n] = values
    fields = padded.reshape(rows, -1, k).astype(np.uint16) << (np.arange(k, dtype=np.uint16) * field_bits)
    return fields.sum(-1).astype(np.uint8)


def unpack_fields(packed: np.ndarray, field_bits: int, n: int) -> np.ndarray:
    """Inverse of pack_fields: (rows, bytes) uint8 -> (rows, n) uint8."""
    k = 8 // field_bits
    shifts = np.arange(k, dtype=np.uint8) * field_bits
    fields = (packed[..., None] >> shifts) & np.uint8(2**field_bits - 1)
    return fields.reshape(packed.shape[0], -1)[:, :n]


def groups_per_row(hidden: int, spec: EmbeddingQuant) -> int:
    return 1 if spec.block_size is None else -(-hidden // spec.block_size)


def table_cost(vocab: int, hidden: int, spec: EmbeddingQuant | None) -> tuple[int, int]:
    """(logical bits, stored bytes) of one table: fp32 when `spec` is None; else its entries, fp16 scales
    and, when asymmetric, `bits`-bit zero points (logical) packed in `field_bits` fields (stored)."""
    if spec is None:
        return 32 * vocab * hidden, 4 * vocab * hidden
    g = groups_per_row(hidden, spec)
    asym = spec.scheme is Scheme.ASYMMETRIC
    logical = vocab * hidden * spec.bits + vocab * g * (TABLE_SCALE_BITS + (spec.bits if asym else 0))
    if spec.bits == 8:
        return logical, vocab * hidden + vocab * g * TABLE_SCALE_BITS // 8
    row_bytes = math.ceil(hidden * spec.field_bits / 8)
    zp_bytes = math.ceil(g * spec.field_bits / 8) if asym else 0
    return logical, vocab * (row_bytes + g * TABLE_SCALE_BITS // 8 + zp_bytes)


def table_problems(name: str, hidden: int, spec: EmbeddingQuant) -> list[str]:
    """Why a table of width `hidden` cannot be stored as `spec` (the graph unpacks whole blocks of whole bytes)."""
    out = []
    if spec.block_size is not None and hidden % spec.block_size:
        out.append(f"embeddings.block_size: {spec.block_size} does not divide table {name!r}'s width {hidden}")
    if spec.bits < 8 and hidden % (8 // spec.field_bits):
        out.append(
            f"embeddings.bits: {spec.bits}-bit fields pack {8 // spec.field_bits} per byte; "
            f"table {name!r}'s width {hidden} is not a multiple"
        )
    return out
