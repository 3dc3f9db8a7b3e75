"""An analytic stand-in for a trained adapter's scorer, for tests and benchmarks of the search.

Each layer adds loss w_i / (L - 1)^2 * sqrt(group / in_features), where L is the number of integer levels
(2^b - 1 symmetric narrow range, 2^b asymmetric) and the square root rewards finer scale groups; the w_i
are seeded log-normal, so layers differ in sensitivity by orders of magnitude as real ones do.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from toolchain.bitconfig import BitConfig
from toolchain.evaluate import Metrics
from toolchain.models import LayerSpec
from toolchain.quant.core import Scheme
from toolchain.search.fisher import LayerCosts


def bert_like_specs(blocks: int = 6, hidden: int = 384, ffn: int = 1536) -> list[LayerSpec]:
    """LayerSpecs shaped like a BERT encoder's 6 Linears per block (MiniLM by default)."""
    shapes = [
        ("attention.self.query", hidden, hidden),
        ("attention.self.key", hidden, hidden),
        ("attention.self.value", hidden, hidden),
        ("attention.output.dense", hidden, hidden),
        ("intermediate.dense", ffn, hidden),
        ("output.dense", hidden, ffn),
    ]
    return [
        LayerSpec(f"bert.encoder.layer.{i}.{kind}", out_f, in_f, i, kind)
        for i in range(blocks)
        for kind, out_f, in_f in shapes
    ]


@dataclass(frozen=True)
class ToyProblem:
    """A loss and Metrics that depend only on each layer's bits, scheme and granularity."""

    specs: tuple[LayerSpec, ...]
    weights: tuple[float, ...]

    @classmethod
    def make(cls, specs: list[LayerSpec], seed: int = 0, spread: float = 1.5, scale: float = 0.2) -> ToyProblem:
        rng = random.Random(seed)
        return cls(tuple(specs), tuple(scale * math.exp(spread * rng.gauss(0, 1)) for _ in specs))

    def loss(self, config: BitConfig) -> float:
        layers = [config.layers[s.name] for s in self.specs]
        return sum(self.layer_loss(i, lb.bits, lb.scheme, lb.block_size) for i, lb in enumerate(layers))

    def metrics(self, config: BitConfig) -> Metrics:
        """Accuracy falls smoothly with the loss; KL is the loss itself."""
        loss = self.loss(config)
        acc = 100.0 * math.exp(-loss)
        return Metrics(accuracy=acc, macro_f1=acc, agreement=acc, kl=loss)

    def layer_loss(self, i: int, bits: int, scheme: Scheme, block_size: int | None) -> float:
        spec = self.specs[i]
        levels = 2**bits - (1 if scheme is Scheme.SYMMETRIC else 0)
        group = spec.in_features if block_size is None else min(block_size, spec.in_features)
        return self.weights[i] / (levels - 1) ** 2 * math.sqrt(group / spec.in_features)

    def layer_costs(self, space) -> LayerCosts:
        """The exact per-layer terms of `loss` as the search's LayerCosts, for every level of `space`."""
        table = {
            v: {
                b: tuple(self.layer_loss(i, b, v.scheme, v.block_size) for i in range(len(self.specs)))
                for b in space.levels(v)
            }
            for v in space.variants()
        }
        return LayerCosts(tuple(s.name for s in self.specs), tuple(s.kind for s in self.specs), table, "toy", 0)
