"""The configuration-aware adapter: one training run serves every per-layer bit configuration.

CoA-LoRA's configuration mapper over shared low-rank factors, PEQA scales, DyLoRA nested ranks, and an
IntLoRA-style integer merge trained straight-through (see docs/design.md). Entry points: `train` and `Run`.
"""

from __future__ import annotations

from toolchain.adapter.configs import (
    FilteredConfigSource,
    FixedConfigSource,
    RandomConfigSource,
    make_config,
)
from toolchain.adapter.run import Run
from toolchain.adapter.settings import ConfigWeighting, DeltaUnits, ForwardMode, Grid, MapperContext, TrainSettings
from toolchain.adapter.training import train
from toolchain.config_source import ConfigSource

__all__ = [
    "ConfigSource",
    "ConfigWeighting",
    "DeltaUnits",
    "FilteredConfigSource",
    "FixedConfigSource",
    "ForwardMode",
    "Grid",
    "MapperContext",
    "Run",
    "RandomConfigSource",
    "TrainSettings",
    "make_config",
    "train",
]
