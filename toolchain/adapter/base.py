"""The quantized base: MSE-clipped scales (and zero points) of the float fine-tuned weights, per layer,
bit-width and grid, computed once per run and cached (safetensors) in its directory.

Only the grid is stored. An entry's integers are rounded again from the float weight when asked for
(`quantize_with`, the rounding `quantize_mse` itself ends with: the same integers, bit for bit), so a run
holds no integers beside the float weights they come from. On MiniLM the stored integers were 389 MB of
every stage's resident set; on a 110M-parameter encoder (85M weights in its Linears, 35 entries each) they
would have been 3 GB. Rounding a layer again cost 2-5 % of an adapter step.
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
from toolchain.quant.core import QuantizedWeight, quantize_mse, quantize_with


def entry_key(layer: str, bits: int, grid: Grid) -> str:
    return f"{layer}|{bits}|{grid.key}"


class QuantBase:
    """(layer, bits, grid) -> QuantizedWeight of the float fine-tuned weight, MSE-clipped.

    `tensors`: each entry's scales (`|s`, (out, G)) and, asymmetric, zero points (`|z`, uint8); `weights`:
    the float fine-tuned weight of every layer, by module name (shared with the model, never written)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], grids: Sequence[Grid], weights: Mapping[str, torch.Tensor]):
        self._t, self._w = tensors, dict(weights)
        self._grids = {g.key: g for g in grids}
        self._moved: dict[tuple[str, str], torch.Tensor] = {}  # the weights on another device, moved once

    def has(self, layer: str, bits: int, grid: Grid) -> bool:
        return f"{entry_key(layer, bits, grid)}|s" in self._t

    def _key(self, layer: str, bits: int, grid: Grid) -> str:
        key = entry_key(layer, bits, grid)
        if f"{key}|s" not in self._t:
            covered = sorted({k.split("|")[2] for k in self._t})
            raise BadInputError(
                f"layer {layer!r}: {bits}-bit {grid.key} is not covered by this run "
                f"(grids: {', '.join(covered)}); retrain with it in TrainSettings.bits / grids"
            )
        return key

    def weight(self, layer: str) -> torch.Tensor:
        """The float fine-tuned weight `layer`'s entries are rounded from (the model's own tensor)."""
        return self._w[layer]

    def _weight(self, layer: str, device: torch.device | None) -> torch.Tensor:
        w = self._w[layer]
        if device is None or w.device == torch.device(device):
            return w
        key = (layer, str(device))
        if key not in self._moved:
            self._moved[key] = w.to(device)
        return self._moved[key]

    def scale(self, layer: str, bits: int, grid: Grid, device: torch.device | None = None) -> torch.Tensor:
        """The (out, G) MSE scales of one entry alone (`get` would also round its integers)."""
        return self._t[f"{self._key(layer, bits, grid)}|s"].to(device)

    def get(self, layer: str, bits: int, grid: Grid, device: torch.device | None = None) -> QuantizedWeight:
        key = self._key(layer, bits, grid)
        scale, zp = self._t[f"{key}|s"].to(device), self._t.get(f"{key}|z")
        zp = None if zp is None else zp.to(device=device, dtype=torch.int16)
        return quantize_with(self._weight(layer, device), scale, zp, bits, grid.scheme, grid.block_size)

    @classmethod
    def build(
        cls,
        model: nn.Module,
        specs: Sequence[LayerSpec],
        bits: Sequence[int],
        grids: Sequence[Grid],
        on_entry: Callable[[], None] | None = None,
    ) -> QuantBase:
        """Quantize every (layer, bits, grid) of `model` with quantize_mse; keep its grids."""
        weights = layer_weights(model, specs)
        tensors: dict[str, torch.Tensor] = {}
        for grid in grids:
            for b in bits:
                for spec in specs:
                    qw = quantize_mse(weights[spec.name], b, grid.scheme, grid.block_size)
                    tensors.update(grid_tensors(entry_key(spec.name, b, grid), qw))
                if on_entry is not None:
                    on_entry()
        return cls(tensors, grids, weights)

    def save(self, path: Path) -> None:
        atomic_write(path, lambda tmp: save_file(self._t, str(tmp)))  # streamed: no copy in memory

    @classmethod
    def load(cls, path: Path, grids: Sequence[Grid], model: nn.Module, specs: Sequence[LayerSpec]) -> QuantBase:
        """The base saved at `path`, rounding from `model`'s weights (the float model it was built from)."""
        return cls(load_file(str(path)), grids, layer_weights(model, specs))


def layer_weights(model: nn.Module, specs: Sequence[LayerSpec]) -> dict[str, torch.Tensor]:
    """Each spec'd layer's weight, detached (its storage shared with `model`)."""
    return {spec.name: model.get_submodule(spec.name).weight.detach() for spec in specs}


def grid_tensors(key: str, qw: QuantizedWeight) -> dict[str, torch.Tensor]:
    """`qw`'s grid as QuantBase stores it under `key`: scales (`|s`) and zero points (`|z`, uint8)."""
    out = {f"{key}|s": qw.scale.contiguous()}
    if qw.zero_point is not None:
        out[f"{key}|z"] = qw.zero_point.to(torch.uint8).contiguous()
    return out
