"""Training configuration sets for the configuration-aware adapter (CoA-LoRA's Pareto-based refinement).

The adapter's training loop samples configurations from a ConfigSource each step and, every few hundred
steps, calls `refine(step, score)` with a scorer of the current adapter (validation loss, lower is better).
`ParetoConfigSource` starts from a set spread across the bit budgets (sensitivity-aware); each round
re-scores the set, proposes candidates (sensitivity-greedy allocations at random budgets, and NSGA-II
children of the set), and keeps the non-dominated configurations of every budget bin as the new set; the
front and its hypervolume are recorded per round in `history`.
On a toy problem NSGA-II children alone rarely reached the front within a few rounds of 16 candidates;
the sensitivity-guided proposals (sensitivity probed with the adapter at the first round) did, which is
why both are used.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from toolchain.bitconfig import BitConfig
from toolchain.config_source import Scorer
from toolchain.models import LayerSpec
from toolchain.profiles import DeviceProfile
from toolchain.search.evolve import evolve
from toolchain.search.pareto import Point, bin_edges, hypervolume, keep_per_bin, pareto_indices
from toolchain.search.scoring import ScoreCache, quant_key
from toolchain.search.sensitivity import Sensitivity, loss_sensitivity
from toolchain.search.space import SearchSpace
from toolchain.search.spread import cost_range, guided_configs, spread_configs


class ParetoConfigSource:
    """A set spread across the space's bit budgets; each `refine` round keeps the best of the set plus NSGA-II's
    candidates."""

    def __init__(
        self,
        space: SearchSpace,
        *,
        set_size: int = 24,
        n_bins: int = 6,
        candidates_per_round: int = 16,
        sensitivity: Sensitivity | None = None,
        probe_sensitivity: bool = True,
        probe_group: Callable[[LayerSpec], str] | None = None,
        seed: int = 0,
        hv_reference: Point | None = None,
    ):
        """`probe_group`: probe the layers of a group together (e.g. by module type: 7 scores on MiniLM
        instead of 37, about 21 s less at the first round); None probes each layer."""
        if set_size < 2:
            raise ValueError(f"set_size must be at least 2, got {set_size}")
        self.space = space
        self.seed = seed
        self.sensitivity = sensitivity
        self.configs: list[BitConfig] = spread_configs(space, set_size, sensitivity, seed)
        self.history: list[dict] = []
        self._reference = hv_reference
        self.edges = bin_edges(*cost_range(space), n_bins)
        self.per_bin = math.ceil(set_size / n_bins)
        self.candidates_per_round = candidates_per_round
        self.probe_sensitivity = probe_sensitivity
        self.probe_group = probe_group
        self.probe_evaluations = 0

    @classmethod
    def for_profiles(cls, profiles: Sequence[DeviceProfile], specs: Sequence[LayerSpec], **kwargs):
        """A set over every choice any of `profiles` allows (one adapter serves them all)."""
        return cls(SearchSpace.union([SearchSpace.from_profile(p, specs) for p in profiles]), **kwargs)

    def sample(self, rng: random.Random, k: int) -> list[BitConfig]:
        """k configurations drawn by `rng` (without replacement while the set lasts)."""
        if k <= len(self.configs):
            return rng.sample(self.configs, k)
        return [rng.choice(self.configs) for _ in range(k)]

    def to_dict(self) -> dict:
        """The current set, the sensitivity and the per-round history, JSON-serialisable (run records)."""
        return {
            "configs": [c.model_dump(mode="json") for c in self.configs],
            "sensitivity": None if self.sensitivity is None else self.sensitivity.to_dict(),
            "history": self.history,
        }

    def state_dict(self) -> dict:
        """Everything `refine` changes (JSON-able): a checkpoint saves it so a resumed run draws the same sets."""
        reference = None if self._reference is None else list(self._reference)
        return self.to_dict() | {"reference": reference, "probe_evaluations": self.probe_evaluations}

    def load_state_dict(self, state: dict) -> None:
        self.configs = [BitConfig.model_validate(c) for c in state["configs"]]
        self.sensitivity = None if state["sensitivity"] is None else Sensitivity.from_dict(state["sensitivity"])
        self.history = list(state["history"])
        self._reference = None if state["reference"] is None else tuple(state["reference"])
        self.probe_evaluations = state["probe_evaluations"]

    def reference(self, points: Sequence[Point]) -> Point:
        """Hypervolume reference, fixed at the first round so rounds compare (pass one to share it)."""
        if self._reference is None:
            hi = cost_range(self.space)[1]
            losses = [p[1] for p in points]
            span = max(losses) - min(losses)
            self._reference = (hi + 0.5, max(losses) + 0.1 * span + 1e-6)
        return self._reference

    def _record(self, step: int, cache: ScoreCache, points: list[Point], kept: list[int], pool) -> None:
        ref = self.reference(points)
        front = pareto_indices(points)
        self.history.append(
            {
                "round": len(self.history),
                "step": step,
                "evaluations": cache.evaluations,
                "reference": list(ref),
                "hypervolume": hypervolume(points, ref),
                "set_hypervolume": hypervolume([points[i] for i in kept], ref),
                "front": [{"avg_bits": points[i][0], "loss": points[i][1], "key": quant_key(pool[i])} for i in front],
                "set": [{"avg_bits": points[i][0], "loss": points[i][1], "key": quant_key(pool[i])} for i in kept],
            }
        )

    def refine(self, step: int, score: Scorer) -> None:
        """Re-score the set with the current adapter, propose candidates, keep each bin's non-dominated ones.

        Candidates: up to half are sensitivity-greedy allocations at random budgets (when a sensitivity is
        known or probed), the rest NSGA-II children of the set and those allocations.
        """
        cache = ScoreCache(score)  # fresh every round: the adapter has changed since the last one
        rng = random.Random(self.seed * 1_000 + len(self.history))
        if self.probe_sensitivity and not self.history:
            probe = ScoreCache(score)  # its configurations stay out of the set
            self.sensitivity = loss_sensitivity(probe, self.space, group=self.probe_group)
            self.probe_evaluations = probe.evaluations
        for c in self.configs:
            cache(c)
        spent = cache.evaluations
        if self.sensitivity is not None:
            for c in guided_configs(self.space, self.edges, self.candidates_per_round // 2, self.sensitivity, rng):
                cache(c)
        parents = [c for c, v in cache.items() if math.isfinite(float(v))]
        n_new = self.candidates_per_round - (cache.evaluations - spent)
        evolve(self.space, parents, cache, float, n_new=n_new, seed=rng.randrange(2**31))
        pool = [c for c, v in cache.items() if math.isfinite(float(v))]
        points = [(c.avg_bits, float(cache(c))) for c in pool]
        kept = keep_per_bin(points, self.edges, self.per_bin, self.reference(points))
        self.configs = [pool[i] for i in kept]
        self._record(step, cache, points, kept, pool)
        self.history[-1]["probe_evaluations"] = self.probe_evaluations if len(self.history) == 1 else 0
