"""Candidate proposals by optuna's NSGA-II: crossovers and mutations of a scored parent population.

The parents enter as the first generation (enqueued, so their known scores are told back without new
evaluations); every later trial is a child NSGA-II breeds from the elite of the previous generation.
Objectives, both minimised: logical bits per weight and the scorer's value. A child the caller rejects
(`repair` returns None) is told a penalised value without being scored, so NSGA-II drops it and no
evaluation is spent on it; a repaired child is scored as repaired (the trial keeps the bred genome).
Only public optuna API is used (create_study, enqueue_trial, ask, tell).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution

from toolchain.bitconfig import BitConfig
from toolchain.search.scoring import ScoreCache
from toolchain.search.space import SearchSpace, genome_of

Scored = tuple[BitConfig, float]


def _distributions(space: SearchSpace) -> dict[str, Any]:
    dists: dict[str, Any] = {"variant": CategoricalDistribution(list(range(len(space.variants()))))}
    for i in range(len(space.specs)):
        dists[f"b{i:03d}"] = CategoricalDistribution(list(space.bits))
    return dists


def params_of(space: SearchSpace, config: BitConfig) -> dict[str, int]:
    genome = genome_of(config)
    if genome is None:
        raise ValueError("a configuration mixing schemes or granularities is outside the search space")
    bits, variant = genome
    out = {"variant": space.variants().index(variant)}
    out.update({f"b{i:03d}": b for i, b in enumerate(bits)})
    return out


def config_of(space: SearchSpace, params: dict[str, int]) -> BitConfig:
    """Decode a trial; a width the variant's scheme cannot store moves to the next storable one up."""
    variant = space.variants()[params["variant"]]
    levels = space.levels(variant)
    bits = [params[f"b{i:03d}"] for i in range(len(space.specs))]
    fixed = [next((lv for lv in levels if lv >= b), levels[-1]) for b in bits]
    return space.build(fixed, variant)


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def evolve(
    space: SearchSpace,
    parents: Sequence[BitConfig],
    cache: ScoreCache,
    objective: Callable[[Any], float],
    *,
    n_new: int,
    seed: int,
    repair: Callable[[BitConfig], BitConfig | None] | None = None,
) -> list[Scored]:
    """Score up to `n_new` children not in `cache`, bred by NSGA-II from `parents` (scored first if new).

    `repair` maps a child to the configuration actually scored (e.g. lowered into a budget), or None to
    reject it unscored. Returns every scored child with its objective value, in breeding order.
    Deterministic for a given seed, parents and cache contents.
    """
    if not parents or n_new <= 0:
        return []
    dists = _distributions(space)
    sampler = optuna.samplers.NSGAIISampler(population_size=max(2, len(parents)), seed=seed)
    with _quiet_optuna():
        study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
        for p in parents:
            study.enqueue_trial(params_of(space, p))
        return _breed(study, space, dists, len(parents), cache, objective, n_new, repair)


def _breed(study, space, dists, n_parents, cache, objective, n_new, repair) -> list[Scored]:
    start, children = cache.evaluations, []
    worst = 0.0
    max_asks = n_parents + 20 * n_new  # stops a search whose children are all rejected or repeated
    for k in range(max_asks):
        if k == n_parents:
            start = cache.evaluations  # unscored parents are scored first; only children count to n_new
        if k >= n_parents and cache.evaluations - start >= n_new:
            break
        trial = study.ask(dists)
        child = config_of(space, trial.params)
        config = repair(child) if repair and k >= n_parents else child  # parents stand as they are
        value = math.nan if config is None else float(objective(cache(config)))
        if not math.isfinite(value):  # rejected, or a diverged scorer: NSGA-II sees a bad child
            study.tell(trial, [child.avg_bits, worst + 1.0])
            continue
        worst = max(worst, value)
        study.tell(trial, [config.avg_bits, value])
        if k >= n_parents:
            children.append((config, value))
    return children
