"""Scoring configurations: a cache so no configuration is evaluated twice, and how Metrics are ranked.

The cache key is the quantization itself (per layer: name, bits, scheme, granularity), not the container:
a container is how the device stores the same integers, so one score serves every profile whose containers
differ. Otherwise it is `BitConfig.digest()`'s content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Generic, TypeVar

from toolchain.bitconfig import BitConfig
from toolchain.evaluate import Metrics

T = TypeVar("T")

KL_WEIGHT = 1.0  # nats of KL counted as one accuracy point in the search objective (ties, saturation)


def quant_key(config: BitConfig) -> str:
    """Digest of what the scorer sees: every layer's bits, scheme and granularity, containers left out."""
    rows = [[name, l.bits, str(l.scheme), l.block_size] for name, l in config.layers.items()]
    if config.branch_rank is not None:
        rows.append(["branch", config.branch_rank])
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


class ScoreCache(Generic[T]):
    """Wraps a scorer; each distinct quantization is scored once. `evaluations` counts real calls."""

    def __init__(self, score: Callable[[BitConfig], T]):
        self._score = score
        self._values: dict[str, T] = {}
        self._configs: dict[str, BitConfig] = {}
        self.evaluations = 0

    def __call__(self, config: BitConfig) -> T:
        key = quant_key(config)
        if key not in self._values:
            self._values[key] = self._score(config)
            self._configs[key] = config
            self.evaluations += 1
        return self._values[key]

    def __contains__(self, config: BitConfig) -> bool:
        return quant_key(config) in self._values

    def items(self) -> list[tuple[BitConfig, T]]:
        """Every scored configuration (as first seen) with its score, in scoring order."""
        return [(self._configs[k], v) for k, v in self._values.items()]


def error_of(m: Metrics) -> float:
    """Scalar the search minimises: accuracy points lost, plus KL to the float model to separate ties.

    Accuracy on a validation set moves in steps of one document and saturates above about 3 bits
    (docs/onnxruntime.md); KL keeps the objective informative there. Without KL, macro-F1 breaks the ties.
    """
    tie = KL_WEIGHT * m.kl if m.kl is not None else (100.0 - m.macro_f1) / 100.0
    return (100.0 - m.accuracy) + tie


def rank_key(m: Metrics) -> tuple[float, float]:
    """Sort key for choosing a configuration: best accuracy first, then lowest KL (or highest macro-F1)."""
    return (-m.accuracy, m.kl if m.kl is not None else -m.macro_f1)


def selection_key(config: BitConfig, m: Metrics) -> tuple[float, float, float]:
    """Sort key of the accuracy-first rule (toolchain.search.select.Rule.ACCURACY): best accuracy first;
    among equal accuracy the most logical bits, then the lowest KL (or highest macro-F1). Where the
    documents cannot tell two configurations apart, the one with more precision is the better bet."""
    return (-m.accuracy, -round(config.avg_bits, 9), m.kl if m.kl is not None else -m.macro_f1)
