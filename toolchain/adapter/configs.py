"""Training configuration sets: where each training step draws its per-layer bit configurations from.

The set is pluggable (`ConfigSource`) because CoA-LoRA's Pareto search (toolchain.search) grows it during
training; `RandomConfigSource` is the default without profiles: a stream of random configurations spread
across average budgets.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from toolchain.adapter.settings import Grid
from toolchain.bitconfig import BitConfig, LayerBits, smallest_container
from toolchain.errors import BadInputError
from toolchain.models import LayerSpec


def layer_bits(spec: LayerSpec, bits: int, grid: Grid) -> LayerBits:
    """LayerBits for `spec` on `grid`, in the smallest ONNX container holding the range."""
    return LayerBits(
        bits=bits,
        scheme=grid.scheme,
        block_size=grid.block_size,
        container=smallest_container(bits, grid.scheme),
        out_features=spec.out_features,
        in_features=spec.in_features,
    )


def make_config(specs: Sequence[LayerSpec], bits: Sequence[int], grids: Sequence[Grid]) -> BitConfig:
    """A BitConfig from one bit-width and one grid per layer."""
    return BitConfig(layers={s.name: layer_bits(s, b, g) for s, b, g in zip(specs, bits, grids, strict=True)})


def _nearest(allowed: Sequence[int], b: int) -> int:
    return min(allowed, key=lambda a: (abs(a - b), a))


class RandomConfigSource:
    """Random per-layer bit-widths around a per-configuration target average drawn from [min, max] bits.

    The target is min + (max - min) * u**skew (u uniform): skew > 1 puts more configurations at low
    budgets, where accuracy depends on the adapter (docs/onnxruntime.md: above 3 bits it saturates). Each layer gets
    floor(target) or ceil(target) (so the mean matches), then with probability `jitter` one bit more or less.
    Each configuration uses one grid, except that each layer switches to another covered grid with
    probability `mix`. Stateless: everything comes from the rng the trainer passes.
    """

    def __init__(
        self,
        specs: Sequence[LayerSpec],
        bits: Sequence[int] = range(2, 9),
        grids: Sequence[Grid] | None = None,
        *,
        skew: float = 1.5,
        jitter: float = 0.25,
        mix: float = 0.2,
    ):
        if not bits or grids == []:
            raise BadInputError("RandomConfigSource: bits and grids must be non-empty")
        self.specs, self.bits, self.grids = list(specs), sorted(set(bits)), list(grids or [Grid()])
        self.skew, self.jitter, self.mix = skew, jitter, mix

    def _one(self, rng: random.Random) -> BitConfig:
        lo, hi = self.bits[0], self.bits[-1]
        target = lo + (hi - lo) * rng.random() ** self.skew
        base_grid = rng.choice(self.grids)
        bits, grids = [], []
        for _ in self.specs:
            b = math.floor(target) + (rng.random() < target - math.floor(target))
            if rng.random() < self.jitter:
                b += rng.choice((-1, 1))
            bits.append(_nearest(self.bits, b))
            grids.append(rng.choice(self.grids) if rng.random() < self.mix else base_grid)
        return make_config(self.specs, bits, grids)

    def sample(self, rng: random.Random, k: int) -> list[BitConfig]:
        return [self._one(rng) for _ in range(k)]

    def refine(self, step: int, score: Callable[[BitConfig], float]) -> None:
        """The spread set does not change with training."""


class FixedConfigSource:
    """Always the given configurations (a per-configuration baseline trains on exactly one)."""

    def __init__(self, configs: Sequence[BitConfig]):
        if not configs:
            raise BadInputError("FixedConfigSource: no configurations given")
        self.configs = list(configs)

    def sample(self, rng: random.Random, k: int) -> list[BitConfig]:
        return [rng.choice(self.configs) for _ in range(k)]

    def refine(self, step: int, score: Callable[[BitConfig], float]) -> None:
        """A fixed set does not change."""


class FilteredConfigSource:
    """The configurations of `source` that `admits` accepts (rejection sampling from the trainer's rng, so
    still a function of the step). A run that serves a few budgets trains only on what they can ship.

    `fallback` (an admitted configuration, e.g. the cheapest) is drawn when `max_tries` draws in a row are
    refused: a budget that admits almost nothing of the spread then trains on what it does admit."""

    def __init__(
        self,
        source,
        admits: Callable[[BitConfig], bool],
        fallback: BitConfig | None = None,
        max_tries: int = 1000,
    ):
        if fallback is not None and not admits(fallback):
            raise ValueError("fallback: the filter refuses it")
        self.source, self.admits, self.fallback, self.max_tries = source, admits, fallback, max_tries

    def _one(self, rng: random.Random) -> BitConfig:
        for _ in range(self.max_tries):
            config = self.source.sample(rng, 1)[0]
            if self.admits(config):
                return config
        if self.fallback is not None:
            return self.fallback
        raise BadInputError(f"no training configuration admitted in {self.max_tries} draws and no fallback")

    def sample(self, rng: random.Random, k: int) -> list[BitConfig]:
        return [self._one(rng) for _ in range(k)]

    def refine(self, step: int, score: Callable[[BitConfig], float]) -> None:
        self.source.refine(step, score)
