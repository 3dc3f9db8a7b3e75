"""Per-device selection: for each profile, the best feasible configuration by measured validation scores.

An exact allocation is the floor, measurements refine it:
- **Estimate.** Each layer's cost at each bit-width (toolchain.search.fisher: the KL to the float model the
  layer's own merged integers would cause, from the float model's Fisher information; or, without one, a
  sensitivity's 4^-bits model).
- **Allocate exactly.** Per profile, the allocations with the least estimated cost within the budget over
  all its variants (their costs are in the same units), each a multiple-choice knapsack solved to
  optimality (toolchain.search.knapsack), the best first; and the highest uniform configuration that fits,
  in the variant where it has the least estimated cost, screened like any proposal.
- **Measure and correct.** Each proposal is scored with the trained adapter (one score per distinct
  quantization, whichever profiles it serves). The estimate is then rescaled per module type to fit what was
  measured (non-negative least squares) and re-solved for new proposals, `rounds` times.
- **Move.** From each profile's best so far, the neighbours the estimate ranks highest (one layer forced a
  level up or down, the rest re-solved exactly), `local` scores per profile; an improvement moves on.
- **Confirm** (with a `confirm` scorer, e.g. the whole validation split where `score` reads a part of
  it): each profile's `finalists` best by the objective are scored again, and only these compete.
- **Choose** (`Rule`): by default the lowest KL among the configurations whose accuracy is within
  `accuracy_tie` points of the best (the build: two standard errors on its documents).
A time budget (`seconds`) stops new scores before the confirmation; each profile's first proposal is
always scored. Where the time budget binds, what is scored depends on the machine's speed; with
`seconds=None` the same scores give the same result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from scipy.optimize import nnls

from toolchain.bitconfig import BitConfig
from toolchain.evaluate import Metrics
from toolchain.models import LayerSpec
from toolchain.profiles import DeviceProfile
from toolchain.search.allocate import CostTable
from toolchain.search.fisher import LayerCosts
from toolchain.search.knapsack import knapsack
from toolchain.search.pareto import pareto_indices
from toolchain.search.scoring import ScoreCache, error_of, quant_key, selection_key
from toolchain.search.sensitivity import Sensitivity, loss_sensitivity
from toolchain.search.space import Cost, Limit, SearchSpace, Variant, cost_of, genome_of, require_reachable

MetricsScorer = Callable[[BitConfig], Metrics]
CORRECTION_RANGE = (0.25, 4.0)  # how far a module type's measured correction may rescale its estimate


class Rule(StrEnum):
    """How a profile's configuration is chosen among those scored."""

    KL = "kl"  # lowest KL among those within `accuracy_tie` accuracy points of the best; then the most bits
    ACCURACY = "accuracy"  # best accuracy; ties: the most bits, then the lowest KL (scoring.selection_key)


@dataclass(frozen=True)
class SearchSettings:
    seed: int = 0  # kept in the result (the search itself is deterministic)
    proposals: int = 2  # knapsack allocations per profile (over its variants) from each estimate, best first
    rounds: int = 2  # corrections of the estimate from measurements, each followed by new proposals
    local: int = 4  # per profile: neighbours of its best scored after the rounds
    finalists: int = 2  # per profile: the best by the objective, scored again by the `confirm` scorer
    seconds: float | None = None  # no new score after this many seconds (None: no time limit)
    rule: Rule = Rule.KL
    accuracy_tie: float = 0.0  # accuracy points within which two configurations tie (Rule.KL)


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
    front: tuple[FrontPoint, ...]  # non-dominated in (bits, objective), cheapest first
    evaluated: tuple[FrontPoint, ...]  # every scored configuration
    evaluations: int
    seconds: float
    seed: int
    costs: LayerCosts  # the estimate the first proposals came from
    stages: dict[str, int]  # new evaluations per stage: sensitivity, proposals, round:<k>

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
            "costs": self.costs.to_dict(),
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
    tables: dict[Variant, CostTable]
    _seen: dict[str, BitConfig | None] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, profile: DeviceProfile, specs: Sequence[LayerSpec]) -> _Target:
        space = SearchSpace.from_profile(profile, specs)
        tables = {v: CostTable.build(space, v) for v in space.variants()}
        return cls(profile, space, Limit.of_profile(profile, _n_params(specs)), tables)

    def feasible(self, config: BitConfig) -> BitConfig | None:
        """`config` in this profile's containers if it is allowed and within budget, else None (memoised)."""
        key = quant_key(config)
        if key not in self._seen:
            adopted = self.space.adopt(config)
            self._seen[key] = adopted if adopted is not None and self.limit.admits(adopted) else None
        return self._seen[key]

    def proposals(self, costs: LayerCosts, k: int, scored: ScoreCache) -> list[BitConfig]:
        """The `k` unscored allocations of least estimated cost over all variants, best first (each variant's
        costs are in the same units, so its allocations compete with the other variants')."""
        found: list[tuple[float, BitConfig]] = []
        for v, tb in self.tables.items():
            rows = costs.rows(tb)
            known = [tb.index(g[0]) for c, _ in scored.items() if (g := _genome_in(self.feasible(c), v))]
            for _ in range(k):
                idx = knapsack(tb, rows, self.limit, exclude=known)
                if idx is None:
                    break
                known.append(idx)
                found.append((_total(rows, idx), self.space.build(tb.bits(idx), v)))
        return [c for _, c in sorted(found, key=lambda f: f[0])[:k]]

    def neighbours(self, costs: LayerCosts, config: BitConfig, scored: ScoreCache) -> list[BitConfig]:
        """Unscored allocations with one layer of `config` a level up or down and the others re-solved
        exactly within budget, least estimated cost first."""
        bits, v = genome_of(config)
        tb = self.tables[v]
        rows, idx = costs.rows(tb), tb.index(bits)
        found: dict[str, tuple[float, BitConfig]] = {}
        for i in range(len(idx)):
            for level in (idx[i] - 1, idx[i] + 1):
                if not 0 <= level < len(tb.levels):
                    continue
                moved = knapsack(tb, rows, self.limit, fixed={i: level})
                if moved is None:
                    continue
                c = self.space.build(tb.bits(moved), v)
                if c not in scored and quant_key(c) not in found:
                    found[quant_key(c)] = (_total(rows, moved), c)
        return [c for _, c in sorted(found.values(), key=lambda f: f[0])]

    def uniform(self, costs: LayerCosts) -> list[BitConfig]:
        """The highest uniform configuration within budget, in the variant where it has the least estimated
        cost (empty when no uniform configuration fits)."""
        found = []
        for v, tb in self.tables.items():
            idx = uniform_fit(tb, self.limit)
            if idx is not None:
                found.append((_total(costs.rows(tb), idx), self.space.build(tb.bits(idx), v)))
        return [min(found, key=lambda f: f[0])[1]] if found else []


def select_configs(
    profiles: Sequence[DeviceProfile],
    specs: Sequence[LayerSpec],
    score: MetricsScorer,
    *,
    costs: LayerCosts | None = None,
    sensitivity: Sensitivity | None = None,
    confirm: MetricsScorer | None = None,
    settings: SearchSettings = SearchSettings(),
) -> SearchResult:
    """The best feasible configuration of every profile, scored by `score` (e.g. the trained adapter).

    `costs` is the per-layer estimate (toolchain.search.fisher.fisher_costs); without it, costs come from
    `sensitivity`, and without that each layer is probed alone (one evaluation per layer, plus one).
    Raises BadInputError naming every profile whose budget no configuration meets.
    """
    t0 = time.perf_counter()
    require_reachable(profiles, specs)
    cache: ScoreCache[Metrics] = ScoreCache(score)
    targets = [_Target.of(p, specs) for p in profiles]
    stages: dict[str, int] = {}
    if costs is None:
        union = SearchSpace.union([t.space for t in targets])
        sens = sensitivity or loss_sensitivity(lambda c: objective(cache(c)), union)
        costs = LayerCosts.from_sensitivity(sens, union)
    stages["sensitivity"] = cache.evaluations
    deadline = None if settings.seconds is None else t0 + settings.seconds

    before = cache.evaluations
    first = [[*t.proposals(costs, settings.proposals, cache), *t.uniform(costs)] for t in targets]
    _score(first, cache, deadline)
    stages["proposals"] = cache.evaluations - before
    current = costs
    for r in range(settings.rounds):
        if deadline is not None and time.perf_counter() >= deadline:
            break
        current = _corrected(costs, cache.items()) or current
        before = cache.evaluations
        _score([t.proposals(current, settings.proposals, cache) for t in targets], cache, deadline)
        stages[f"round:{r + 1}"] = cache.evaluations - before
    for t in targets:
        before = cache.evaluations
        _local(t, current, cache, settings, deadline)
        stages[f"local:{t.profile.name}"] = cache.evaluations - before

    chosen_from = cache
    if confirm is not None:
        chosen_from = ScoreCache(confirm)
        for t in targets:
            for c in _ranked(t, cache)[: settings.finalists]:
                chosen_from(c)
        stages["confirm"] = chosen_from.evaluations
    selections = [_selection(t, chosen_from, settings) for t in targets]  # after all rounds: any find serves all
    items = cache.items()
    evaluated = tuple(_point(c, m) for c, m in items)
    front = tuple(evaluated[i] for i in pareto_indices([(c.avg_bits, objective(m)) for c, m in items]))
    elapsed = time.perf_counter() - t0
    n = sum(stages.values())
    return SearchResult(tuple(selections), front, evaluated, n, elapsed, settings.seed, costs, stages)


def merge_results(parts: Sequence[SearchResult], order: Sequence[str]) -> SearchResult:
    """One result from searches over disjoint groups of profiles (one per embedding table format): the
    selections in `order` (profile names), every scored point, the front over them all; evaluations,
    seconds and stages summed. The costs are the first part's (the groups share them)."""
    if len(parts) == 1:
        return parts[0]
    by_name = {sel.profile: sel for part in parts for sel in part.selections}
    evaluated = tuple(p for part in parts for p in part.evaluated)
    points = [(p.avg_bits, objective(Metrics(p.accuracy, 0.0, None, p.kl))) for p in evaluated]
    stages: dict[str, int] = {}
    for part in parts:
        for k, v in part.stages.items():
            stages[k] = stages.get(k, 0) + v
    return SearchResult(
        tuple(by_name[n] for n in order),
        tuple(evaluated[i] for i in pareto_indices(points)),
        evaluated,
        sum(part.evaluations for part in parts),
        sum(part.seconds for part in parts),
        parts[0].seed,
        parts[0].costs,
        stages,
    )


def objective(m: Metrics) -> float:
    """What the search minimises and corrects its estimate to: KL to the float model when the scorer has a
    reference, else the accuracy points lost (scoring.error_of)."""
    return m.kl if m.kl is not None else error_of(m)


def choose(scored: Sequence[tuple[BitConfig, Metrics]], rule: Rule, accuracy_tie: float = 0.0):
    """The (configuration, metrics) pair `rule` prefers among `scored` (not empty)."""
    if rule is Rule.ACCURACY:
        return min(scored, key=lambda f: selection_key(*f))
    best = max(m.accuracy for _, m in scored)
    tied = [f for f in scored if f[1].accuracy >= best - accuracy_tie]
    return min(tied, key=lambda f: (objective(f[1]), -round(f[0].avg_bits, 9), -f[1].accuracy))


def _score(lists: list[list[BitConfig]], cache: ScoreCache, deadline: float | None) -> None:
    """Score the lists round-robin (each list's first, then each one's second, ...) until `deadline`; the
    first of each list is scored whatever the time, so every profile has a selection."""
    for k in range(max((len(x) for x in lists), default=0)):
        for x in lists:
            if k < len(x) and (k == 0 or deadline is None or time.perf_counter() < deadline):
                cache(x[k])


def _local(t: _Target, costs: LayerCosts, cache: ScoreCache, settings: SearchSettings, deadline) -> None:
    """Up to `settings.local` scores of neighbours of the profile's best, moving on from each improvement."""
    spent = 0
    while spent < settings.local and (deadline is None or time.perf_counter() < deadline):
        best = _best(t, cache, settings)[0]
        if genome_of(best) is None:
            return
        improved = False
        for c in t.neighbours(costs, best, cache)[: settings.local - spent]:
            if deadline is not None and time.perf_counter() >= deadline:
                return
            cache(c)
            spent += 1
            if _best(t, cache, settings)[0] is not best:
                improved = True
                break
        if not improved:
            return


def _corrected(costs: LayerCosts, items: Sequence[tuple[BitConfig, Metrics]]) -> LayerCosts | None:
    """`costs` rescaled per module type to fit the measured objective (plus a free offset: the tables and the
    head add a constant), each factor within CORRECTION_RANGE; None with too few single-variant points."""
    kinds = list(dict.fromkeys(costs.kinds))
    rows, ys = [], []
    for c, m in items:
        g = genome_of(c)
        if g is not None and g[1] in costs.table and all(b in costs.table[g[1]] for b in g[0]):
            per = costs.per_kind(c)
            rows.append([per[k] for k in kinds] + [1.0, -1.0])
            ys.append(objective(m))
    if len(rows) < len(kinds) + 2:
        return None
    x, _ = nnls(np.array(rows), np.array(ys))
    lo, hi = CORRECTION_RANGE
    return costs.scaled({k: float(np.clip(w, lo, hi)) for k, w in zip(kinds, x)})


def _total(rows: Sequence[Sequence[float]], idx: Sequence[int]) -> float:
    return sum(row[k] for row, k in zip(rows, idx))


def _genome_in(config: BitConfig | None, variant: Variant) -> tuple[list[int], Variant] | None:
    g = None if config is None else genome_of(config)
    return g if g is not None and g[1] == variant else None


def _interleave(lists: list[list[BitConfig]]) -> list[BitConfig]:
    return [x[k] for k in range(max((len(x) for x in lists), default=0)) for x in lists if k < len(x)]


def _n_params(specs: Sequence[LayerSpec]) -> int:
    return sum(s.out_features * s.in_features for s in specs)


def _point(config: BitConfig, m: Metrics) -> FrontPoint:
    return FrontPoint(config.avg_bits, m.accuracy, m.kl, quant_key(config))


def uniform_fit(t: CostTable, limit: Limit) -> list[int] | None:
    """Level indices of the highest uniform width within `limit`, or None if none fits."""
    for level in range(len(t.levels) - 1, -1, -1):
        idx = [level] * len(t.logical)
        if limit.excess(*t.totals(idx)) == 0:
            return idx
    return None


def _best(t: _Target, cache: ScoreCache, settings: SearchSettings) -> tuple[BitConfig, Metrics, int]:
    """The profile's chosen configuration among those scored (in its containers), its metrics, and how
    many feasible ones competed."""
    feasible = [(a, m) for c, m in cache.items() if (a := t.feasible(c)) is not None]
    best, m = choose(feasible, settings.rule, settings.accuracy_tie)
    return best, m, len(feasible)


def _ranked(t: _Target, cache: ScoreCache) -> list[BitConfig]:
    """The profile's scored configurations (in its containers), lowest objective first, then most bits."""
    feasible = [(a, m) for c, m in cache.items() if (a := t.feasible(c)) is not None]
    return [c for c, _ in sorted(feasible, key=lambda f: (objective(f[1]), -round(f[0].avg_bits, 9)))]


def _selection(t: _Target, cache: ScoreCache, settings: SearchSettings) -> Selection:
    best, m, n = _best(t, cache, settings)
    return Selection(t.profile.name, best, cost_of(best), m, n)
