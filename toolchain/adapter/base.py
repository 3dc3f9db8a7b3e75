"""The quantized base: MSE-clipped integers and scales of the float fine-tuned weights, per layer, bit-width
and grid, computed once per run and cached (safetensors) in its directory.

Integers are stored as int8 (symmetric) or uint8 (asymmetric; 8-bit asymmetric reaches 255), which holds
every range 2..8 bits produces; `get` returns the toolchain's QuantizedWeight (int16 integers).

A loaded base is read from its file entry by entry (`TensorFile`), not held: a step reads the few entries
its configurations use. On MiniLM the default build's base is 372 MB of 35 entries per layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from toolchain.adapter.settings import Grid
from toolchain.errors import BadInputError
from toolchain.io import atomic_write
from toolchain.models import LayerSpec
from toolchain.quant.core import QuantizedWeight, Scheme, quantize_mse


class TensorFile(Mapping[str, torch.Tensor]):
    """The tensors of a safetensors file, each read when asked for and none kept. The file is opened
    (memory-mapped) per read and closed again, so no part of it stays in the process's memory; an
    entry's tensors are read in one opening (`read`), about 0.6 ms on the build host."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        with safe_open(str(self.path), framework="pt") as f:  # reads and checks the header
            self._keys = frozenset(f.keys())

    def read(self, keys: Sequence[str]) -> list[torch.Tensor | None]:
        """The tensors named `keys` (None for a name the file does not hold), from one opening."""
        with safe_open(str(self.path), framework="pt") as f:
            return [f.get_tensor(k) if k in self._keys else None for k in keys]

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._keys:
            raise KeyError(key)
        return self.read([key])[0]

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._keys))

    def __len__(self) -> int:
        return len(self._keys)


def read_tensors(tensors: Mapping[str, torch.Tensor], keys: Sequence[str]) -> list[torch.Tensor | None]:
    """tensors[k] for each of `keys` (None when absent), a TensorFile's in one opening."""
    if isinstance(tensors, TensorFile):
        return tensors.read(keys)
    return [tensors.get(k) for k in keys]


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
        return cls(TensorFile(path), grids)


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
    q, scale, zp = read_tensors(tensors, [f"{key}|q", f"{key}|s", f"{key}|z"])
    return QuantizedWeight(
        q=q.to(device=device, dtype=torch.int16),
        scale=scale.to(device),
        zero_point=None if zp is None else zp.to(device=device, dtype=torch.int16),
        bits=bits,
        scheme=scheme,
        block_size=block_size,
    )
