"""Per-device selection: for each profile, the feasible configuration with the best validation accuracy
(ties: the most bits, then the lowest KL; scoring.selection_key).

One shared search serves every profile: sensitivity-greedy seeds at and below each profile's budget, then
NSGA-II children over the union of the profiles' spaces (a child no profile can use is never scored); the
scored configurations form one front of accuracy against bits. Each profile then takes its best feasible
point and refines it with a short local search near its budget. Scores come from the trained adapter (no
fine-tuning); each distinct quantization is scored once, whichever profiles it serves.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from toolchain.bitconfig import BitConfig
from toolchain.evaluate import Metrics
from toolchain.models import LayerSpec
from toolchain.profiles import DeviceProfile
from toolchain.search.allocate import CostTable, allocate
from toolchain.search.evolve import evolve
from toolchain.search.local import local_search
from toolchain.search.pareto import pareto_indices
from toolchain.search.scoring import ScoreCache, error_of, quant_key, selection_key
from toolchain.search.sensitivity import Sensitivity, loss_sensitivity, module_type
from toolchain.search.space import Cost, Limit, SearchSpace, Variant, cost_of, genome_of, require_reachable

MetricsScorer = Callable[[BitConfig], Metrics]


@dataclass(frozen=True)
class SearchSettings:
    """Evaluation budget of one search: on MiniLM with the 5 shipped profiles the defaults spent 67-74 (7
    sensitivity probes unless a sensitivity is given, as a build's is; about 30 seeds, 10 front, up to 6
    local per profile)."""

    seed: int = 0
    front_evals: int = 10  # NSGA-II children scored for the shared front, shared out over the profiles
    local_evals: int = 6  # per profile, near its budget
    lower_seeds: int = 1  # extra seeds per profile at budgets below its own


@dataclass(frozen=True)
class Selection:
    """The configuration chosen for one profile and what it scored."""

    profile: str
    config: BitConfig
    cost: Cost
    metrics: Metrics
    candidates_evaluated: int  # distinct feasible configurations of this profile that were scored

    def to_dict(self) -> dict:
        return {
            "profile": self.profile,
            "cost": self.cost.to_dict(),
            "metrics": self.metrics.to_dict(),
            "candidates_evaluated": self.candidates_evaluated,
            "key": quant_key(self.config),
            "config": self.config.model_dump(mode="json"),
        }


@dataclass(frozen=True)
class FrontPoint:
    avg_bits: float
    accuracy: float
    kl: float | None
    key: str

    def to_dict(self) -> dict:
        return {"avg_bits": self.avg_bits, "accuracy": self.accuracy, "kl": self.kl, "key": self.key}


@dataclass(frozen=True)
class SearchResult:
    selections: tuple[Selection, ...]
    front: tuple[FrontPoint, ...]  # non-dominated in (bits, error_of), cheapest first
    evaluated: tuple[FrontPoint, ...]  # every scored configuration
    evaluations: int
    seconds: float
    seed: int
    sensitivity: Sensitivity
    stages: dict[str, int]  # new evaluations per stage: sensitivity, seeds, front, local:<profile>

    def selection(self, profile: str) -> Selection:
        for s in self.selections:
            if s.profile == profile:
                return s
        raise KeyError(f"no selection for profile {profile!r}; have {[s.profile for s in self.selections]}")

    def to_dict(self) -> dict:
        """Everything but the wall time, so the same run and seed write the same bytes (the build records
        the time in build.json)."""
        return {
            "seed": self.seed,
            "evaluations": self.evaluations,
            "stages": dict(self.stages),
            "sensitivity": self.sensitivity.to_dict(),
            "selections": [s.to_dict() for s in self.selections],
            "front": [p.to_dict() for p in self.front],
            "evaluated": [p.to_dict() for p in self.evaluated],
        }


@dataclass(frozen=True)
class _Target:
    """One profile as the search sees it."""

    profile: DeviceProfile
    space: SearchSpace
    limit: Limit
    _seen: dict[str, BitConfig | None] = field(default_factory=dict, compare=False, repr=False)
    _tables: dict[Variant, CostTable] = field(default_factory=dict, compare=False, repr=False)

    def feasible(self, config: BitConfig) -> BitConfig | None:
        """`config` in this profile's containers if it is allowed and within budget, else None (memoised)."""
        key = quant_key(config)
        if key not in self._seen:
            adopted = self.space.adopt(config)
            self._seen[key] = adopted if adopted is not None and self.limit.admits(adopted) else None
        return self._seen[key]

    def repair(self, config: BitConfig, sens: Sensitivity) -> BitConfig | None:
        """A child of this profile's space moved into its budget: sensitivity-greedy lowering from the
        child's own bits, then filling what is left (a crossover of two parents at the budget is usually
        just over it)."""
        genome = genome_of(config)
        if genome is None or self.space.adopt(config) is None:
            return None
        bits, variant = genome
        table = self._tables.setdefault(variant, CostTable.build(self.space, variant))
        idx = allocate(table, sens.aligned(self.space.specs), self.limit, sens.ref_bits, start=table.index(bits))
        return None if idx is None else self.space.build(table.bits(idx), variant)


def select_configs(
    profiles: Sequence[DeviceProfile],
    specs: Sequence[LayerSpec],
    score: MetricsScorer,
    *,
    sensitivity: Sensitivity | None = None,
    settings: SearchSettings = SearchSettings(),
) -> SearchResult:
    """The best feasible configuration of every profile, scored by `score` (e.g. the trained adapter).

    Raises BadInputError naming every profile whose budget no configuration meets. Without `sensitivity`
    (pass the one measured during training), the module types are probed together: 7 evaluations on BERT.
    """
    t0 = time.perf_counter()
    require_reachable(profiles, specs)
    cache: ScoreCache[Metrics] = ScoreCache(score)
    n = _n_params(specs)
    targets = [_Target(p, SearchSpace.from_profile(p, specs), Limit.of_profile(p, n)) for p in profiles]
    stages: dict[str, int] = {}
    sens = sensitivity or loss_sensitivity(
        lambda c: error_of(cache(c)), SearchSpace.union([t.space for t in targets]), group=module_type
    )
    stages["sensitivity"] = cache.evaluations
    _shared_front(targets, sens, cache, settings, stages)
    rng = random.Random(settings.seed)
    for t in targets:
        before = cache.evaluations
        local_search(t.space, t.limit, sens, _best_feasible(t, cache)[0], cache, settings.local_evals, rng)
        stages[f"local:{t.profile.name}"] = cache.evaluations - before
    selections = [_selection(t, cache) for t in targets]  # after all searches: any profile's find serves all
    items = cache.items()
    evaluated = tuple(_point(c, m) for c, m in items)
    front = tuple(evaluated[i] for i in pareto_indices([(c.avg_bits, error_of(m)) for c, m in items]))
    elapsed = time.perf_counter() - t0
    return SearchResult(tuple(selections), front, evaluated, cache.evaluations, elapsed, settings.seed, sens, stages)


def merge_results(parts: Sequence[SearchResult], order: Sequence[str]) -> SearchResult:
    """One result from searches over disjoint groups of profiles (one per embedding table format): the
    selections in `order` (profile names), every scored point, the front over them all; evaluations,
    seconds and stages summed. The sensitivity is the first part's (the groups share it)."""
    if len(parts) == 1:
        return parts[0]
    by_name = {sel.profile: sel for part in parts for sel in part.selections}
    evaluated = tuple(p for part in parts for p in part.evaluated)
    errors = [(p.avg_bits, error_of(Metrics(p.accuracy, 0.0, None, p.kl or 0.0))) for p in evaluated]
    stages: dict[str, int] = {}
    for part in parts:
        for k, v in part.stages.items():
            stages[k] = stages.get(k, 0) + v
    return SearchResult(
        tuple(by_name[n] for n in order),
        tuple(evaluated[i] for i in pareto_indices(errors)),
        evaluated,
        sum(part.evaluations for part in parts),
        sum(part.seconds for part in parts),
        parts[0].seed,
        parts[0].sensitivity,
        stages,
    )


def _shared_front(
    targets: list[_Target], sens: Sensitivity, cache: ScoreCache, settings: SearchSettings, stages: dict
) -> None:
    """Seeds of every profile, then NSGA-II children bred within each profile's space (all into `cache`).

    Breeding within one profile's space keeps children usable: crossing an npu_int8 parent (no 3 bits)
    with an rpi5 parent (no 7 bits) gives children no profile allows. Children over the budget are
    repaired into it. Every child joins the one front and serves each profile it is feasible for.
    """
    before = cache.evaluations
    for t in targets:
        _seeds(t, sens, cache, settings.lower_seeds)
    stages["seeds"] = cache.evaluations - before
    before = cache.evaluations
    for k, t in enumerate(targets):
        share = settings.front_evals // len(targets) + (k < settings.front_evals % len(targets))
        parents = [a for c, _ in cache.items() if (a := t.feasible(c)) is not None]
        repair = functools.partial(t.repair, sens=sens)
        evolve(t.space, parents, cache, error_of, n_new=share, seed=settings.seed + k, repair=repair)
    stages["front"] = cache.evaluations - before


def _n_params(specs: Sequence[LayerSpec]) -> int:
    return sum(s.out_features * s.in_features for s in specs)


def _point(config: BitConfig, m: Metrics) -> FrontPoint:
    return FrontPoint(config.avg_bits, m.accuracy, m.kl, quant_key(config))


def _seeds(t: _Target, sens: Sensitivity, cache: ScoreCache, lower: int) -> list[BitConfig]:
    """Per variant, three configurations at the budget; then `lower` cheaper ones in the best variant.

    At the budget: sensitivity-greedy from the top (every layer at its highest width, lowered until it
    fits), the dearest uniform configuration that fits, and that uniform one with the budget left over
    spent greedily. Top-down trusts the sensitivity model; the other two hedge against it (it extrapolates
    from one probe width), and the uniform one guarantees the choice is never worse than the best uniform.
    """
    values = sens.aligned(t.space.specs)
    found: list[tuple[CostTable, BitConfig]] = []
    for tb in (CostTable.build(t.space, v) for v in t.space.variants()):
        uniform = _uniform_fit(tb, t.limit)
        starts = [None] if uniform is None else [None, uniform]
        picks = [allocate(tb, values, t.limit, sens.ref_bits, start=s) for s in starts] + [uniform]
        found += [(tb, t.space.build(tb.bits(idx), tb.variant)) for idx in picks if idx is not None]
    best_table = min(found, key=lambda f: selection_key(f[1], cache(f[1])))[0]
    out = [c for _, c in found]
    cheapest = best_table.totals([0] * len(best_table.logical))
    for k in range(1, lower + 1):
        idx = allocate(best_table, values, _shrunk(t.limit, cheapest, k / (lower + 1)), sens.ref_bits)
        if idx is not None:
            out.append(t.space.build(best_table.bits(idx), best_table.variant))
    for c in out:
        cache(c)
    return out


def _uniform_fit(t: CostTable, limit: Limit) -> list[int] | None:
    """Level indices of the highest uniform width within `limit`, or None if none fits."""
    for level in range(len(t.levels) - 1, -1, -1):
        idx = [level] * len(t.logical)
        if limit.excess(*t.totals(idx)) == 0:
            return idx
    return None


def _shrunk(limit: Limit, floor: tuple[int, int], frac: float) -> Limit:
    """A budget `frac` of the way from the cheapest configuration's costs up to `limit`."""

    def part(cap: float | None, lo: int) -> float | None:
        return None if cap is None else lo + (cap - lo) * frac

    return Limit(part(limit.max_logical_bits, floor[0]), part(limit.max_container_bytes, floor[1]))


def _best_feasible(t: _Target, cache: ScoreCache) -> tuple[BitConfig, Metrics, int]:
    """The profile's best scored configuration (in its containers), its metrics, and how many competed."""
    feasible = [(a, m) for c, m in cache.items() if (a := t.feasible(c)) is not None]
    best, m = min(feasible, key=lambda f: selection_key(*f))
    return best, m, len(feasible)


def _selection(t: _Target, cache: ScoreCache) -> Selection:
    best, m, n = _best_feasible(t, cache)
    return Selection(t.profile.name, best, cost_of(best), m, n)
