"""The one interface between the adapter's training loop and whatever supplies its configurations.

The adapter (toolchain.adapter) samples from a ConfigSource every step; the search (toolchain.search)
provides the Pareto-refined source. Neither package imports the other for it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from toolchain.bitconfig import BitConfig

Scorer = Callable[[BitConfig], float]


@runtime_checkable
class ConfigSource(Protocol):
    """Supplies the configurations a training step learns.

    `refine` is called every `TrainSettings.refine_every` steps with `score(config)`: the validation loss
    (lower is better) of that configuration under the current adapter, on a fixed validation batch.
    A source with state may also define `state_dict() -> dict` (JSON-able) and `load_state_dict(dict)`;
    checkpoints then save and restore it, so a resumed run draws what an uninterrupted one would.
    A source that measured per-layer sensitivities exposes them as `sensitivity` (an object with
    `to_dict()`, or None); the finished run records them in its run.json and the per-device search starts
    from them instead of probing the same configurations again.
    """

    def sample(self, rng: random.Random, k: int) -> list[BitConfig]: ...

    def refine(self, step: int, score: Scorer) -> None: ...
