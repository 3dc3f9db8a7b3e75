"""The training set that is never refined: the spread configurations `ParetoConfigSource` starts from,
re-scored each round but kept. The baseline the refinement benches (search_refine_toy, adapter_variants source=spread)
and tests compare the refinement with."""

from __future__ import annotations

import math

from toolchain.config_source import Scorer
from toolchain.search import ParetoConfigSource
from toolchain.search.scoring import ScoreCache


class SpreadOnlySource(ParetoConfigSource):
    """ParetoConfigSource whose `refine` records the set's front and hypervolume and changes nothing."""

    def refine(self, step: int, score: Scorer) -> None:
        cache = ScoreCache(score)
        pool = [c for c in self.configs if math.isfinite(float(cache(c)))]
        points = [(c.avg_bits, float(cache(c))) for c in pool]
        self._record(step, cache, points, list(range(len(points))), pool)
