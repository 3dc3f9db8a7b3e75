"""The quantized base: MSE-clipped integers and scales of the float fine-tuned weights, per layer, bit-width
and grid, computed once per run and cached (safetensors) in its directory.

Integers are stored as int8 (symmetric) or uint8 (asymmetric; 8-bit asymmetric reaches 255), which holds
every range 2..8 bits produces; `get` returns the toolchain's QuantizedWeight (int16 integers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from toolchain.adapter.settings import Grid
from toolchain.errors import BadInputError
from toolchain.io import atomic_write
from toolchain.models import LayerSpec
from toolchain.quant.core import QuantizedWeight, Scheme, quantize_mse


def entry_key(layer: str, bits: int, grid: Grid) -> str:
    return f"{layer}|{bits}|{grid.key}"


class QuantBase:
    """(layer, bits, grid) -> QuantizedWeight of the float fine-tuned weight, MSE-clipped."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], grids: Sequence[Grid]):
        self._t = tensors
        self._grids = {g.key: g for g in grids}

    def has(self, layer: str, bits: int, grid: Grid) -> bool:
        return f"{entry_key(layer, bits, grid)}|q" in self._t

    def _key(self, layer: str, bits: int, grid: Grid) -> str:
        key = entry_key(layer, bits, grid)
        if f"{key}|q" not in self._t:
            covered = sorted({k.split("|")[2] for k in self._t})
            raise BadInputError(
                f"layer {layer!r}: {bits}-bit {grid.key} is not covered by this run "
                f"(grids: {', '.join(covered)}); retrain with it in TrainSettings.bits / grids"
            )
        return key

    def scale(self, layer: str, bits: int, grid: Grid, device: torch.device | None = None) -> torch.Tensor:
        """The (out, G) MSE scales of one entry alone (`get` would also convert its integers)."""
        return self._t[f"{self._key(layer, bits, grid)}|s"].to(device)

    def get(self, layer: str, bits: int, grid: Grid, device: torch.device | None = None) -> QuantizedWeight:
        return entry_weight(self._t, self._key(layer, bits, grid), bits, grid.scheme, grid.block_size, device)

    @classmethod
    def build(
        cls,
        model: nn.Module,
        specs: Sequence[LayerSpec],
        bits: Sequence[int],
        grids: Sequence[Grid],
        on_entry: Callable[[], None] | None = None,
    ) -> QuantBase:
        """Quantize every (layer, bits, grid) of `model` with quantize_mse."""
        tensors: dict[str, torch.Tensor] = {}
        for grid in grids:
            for b in bits:
                for spec in specs:
                    w = model.get_submodule(spec.name).weight.detach()
                    qw = quantize_mse(w, b, grid.scheme, grid.block_size)
                    tensors.update(entry_tensors(entry_key(spec.name, b, grid), qw))
                if on_entry is not None:
                    on_entry()
        return cls(tensors, grids)

    def save(self, path: Path) -> None:
        atomic_write(path, lambda tmp: save_file(self._t, str(tmp)))  # streamed: no copy in memory

    @classmethod
    def load(cls, path: Path, grids: Sequence[Grid]) -> QuantBase:
        return cls(load_file(str(path)), grids)


def entry_tensors(key: str, qw: QuantizedWeight) -> dict[str, torch.Tensor]:
    """`qw` as stored under `key`: integers (`|q`, int8 or uint8), scales (`|s`) and zero points (`|z`)."""
    store = torch.int8 if qw.scheme is Scheme.SYMMETRIC else torch.uint8
    out = {f"{key}|q": qw.q.to(store).contiguous(), f"{key}|s": qw.scale.contiguous()}
    if qw.zero_point is not None:
        out[f"{key}|z"] = qw.zero_point.to(torch.uint8).contiguous()
    return out


def entry_weight(
    tensors: Mapping[str, torch.Tensor],
    key: str,
    bits: int,
    scheme: Scheme,
    block_size: int | None,
    device: torch.device | None = None,
) -> QuantizedWeight:
    """The QuantizedWeight `entry_tensors` stored under `key` (int16 integers, on `device`)."""
    q, scale, zp = tensors[f"{key}|q"], tensors[f"{key}|s"], tensors.get(f"{key}|z")
    return QuantizedWeight(
        q=q.to(device=device, dtype=torch.int16),
        scale=scale.to(device),
        zero_point=None if zp is None else zp.to(device=device, dtype=torch.int16),
        bits=bits,
        scheme=scheme,
        block_size=block_size,
    )
