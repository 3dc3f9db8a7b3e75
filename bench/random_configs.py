"""Held-out configurations for the adapter benches: random per-layer bit-widths spread under a budget."""

from __future__ import annotations

import random
from collections.abc import Sequence

from toolchain.adapter import Grid, make_config
from toolchain.bitconfig import BitConfig
from toolchain.errors import BadInputError
from toolchain.models import LayerSpec


def random_config_at(
    specs: Sequence[LayerSpec],
    avg_bits: float,
    rng: random.Random,
    bits: Sequence[int] = range(2, 9),
    grid: Grid | None = None,
) -> BitConfig:
    """A random configuration at most (and close to) `avg_bits` logical bits per weight, overhead included.

    Starts every layer at the lowest bit-width, then raises random layers one allowed step at a time while
    the budget holds: layers end up spread over several bit-widths (held-out configurations for benchmarks).
    """
    allowed, grid = sorted(set(bits)), grid or Grid()
    level = [0] * len(specs)
    config = make_config(specs, [allowed[0]] * len(specs), [grid] * len(specs))
    if config.avg_bits > avg_bits:
        raise BadInputError(f"avg_bits {avg_bits}: below the smallest configuration ({config.avg_bits:.3f})")
    open_layers = list(range(len(specs)))
    while open_layers:
        i = rng.choice(open_layers)
        trial = level.copy()
        trial[i] += 1
        candidate = make_config(specs, [allowed[t] for t in trial], [grid] * len(specs))
        if candidate.avg_bits <= avg_bits:
            level, config = trial, candidate
        if candidate.avg_bits > avg_bits or trial[i] == len(allowed) - 1:
            open_layers.remove(i)
    return config
