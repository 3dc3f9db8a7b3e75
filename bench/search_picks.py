"""Each profile's searched configuration against its baselines, chosen on validation and reported on test.

On a build's trained run (`edgeq build --out DIST`), for every shipped profile with a choice:
1. **The search** as the build runs it (toolchain.build.device_search.search_run): its pick and wall time.
2. **The accuracy-on-a-prefix search at equal time**: the same proposer (the same layer costs, knapsack,
   corrections and moves), scored by accuracy on the first PREFIX_DOCS validation documents and chosen by
   accuracy first (Rule.ACCURACY, the rule of the search before the continuous objective), given the
   build search's wall time and enough rounds and moves to spend it. Both searches get the layer costs
   computed once, outside the timing.
3. **Baselines**: the uniform configurations within budget costing no more than the pick (one per
   variant: the highest that fits) and `--random` random feasible configurations; each pool's best is
   chosen by the build's rule on the validation documents the build confirms on.
4. **The rule, decided on validation**: every configuration scored for a profile on those validation
   documents (the pool: the search's pick, the prefix pick, the uniforms, the randoms) is chosen from by each rule
   on one half of the validation documents and measured on the other half, both ways round.
5. **Test**: accuracy with a Wilson 95 % interval for the pick and each baseline, and McNemar's exact test
   of the pick against each, on the test split nothing above saw.

    python bench/suite.py run search --dist DIST [--random 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from adapter_common import find_run
from record import provenance
from search_baselines import random_feasible
from stats import accuracy_interval, mcnemar

from toolchain.adapter import Run
from toolchain.adapter.run_files import DATA, read_dataset
from toolchain.bitconfig import BitConfig
from toolchain.build.device_search import (
    CONFIRM_TOKENS,
    FISHER_TOKENS,
    SCREEN_TOKENS,
    TIE_SE,
    SplitDocs,
    accuracy_tie,
    arithmetic,
    run_layer_costs,
    run_search_profiles,
    search_run,
)
from toolchain.evaluate import Metrics, metrics
from toolchain.io import atomic_write_json
from toolchain.profiles import profiles_or_default
from toolchain.search.allocate import CostTable
from toolchain.search.scoring import quant_key
from toolchain.search.select import Rule, SearchSettings, choose, uniform_fit
from toolchain.search.space import Limit, SearchSpace, cost_of

RESULTS = Path(__file__).resolve().parent / "results" / "search_picks_mr.json"
PREFIX_DOCS = 56  # the validation prefix the search scored before the continuous objective


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dist", type=Path, required=True, help="an `edgeq build --out` directory")
    p.add_argument("--random", type=int, default=20, help="random feasible configurations per profile")
    p.add_argument("--seed", type=int, default=0, help="seed of the random configurations")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    run = Run.load(find_run(args.dist))
    profiles = run_search_profiles(run, profiles_or_default(None))
    val, test = SplitDocs.of(run, max_tokens=CONFIRM_TOKENS), SplitDocs.of(run, split="test")
    tie = accuracy_tie(val)

    t = time.perf_counter()
    costs = run_layer_costs(run, profiles)
    costs_s = time.perf_counter() - t
    t = time.perf_counter()
    build = search_run(run, profiles, progress=False, costs=costs)
    build_s = time.perf_counter() - t
    prefix = SplitDocs.of(run, PREFIX_DOCS)
    # counts high enough that the time binds: the prefix search may spend all of the build search's time
    prefix_settings = SearchSettings(seconds=build_s, rule=Rule.ACCURACY, proposals=4, rounds=50, local=50)

    def prefix_scorers(profile):
        return prefix.scorer(run, *arithmetic(profile)), None

    t = time.perf_counter()
    by_prefix = search_run(
        run, profiles, progress=False, costs=costs, settings=prefix_settings, scorer_for=prefix_scorers
    )
    prefix_s = time.perf_counter() - t
    print(f"layer costs {costs_s:.1f} s; build search {build_s:.1f} s; prefix search {prefix_s:.1f} s", flush=True)

    val_logits: dict[tuple[str, str], torch.Tensor] = {}
    test_logits: dict[tuple[str, str], torch.Tensor] = {}

    def on(docs: SplitDocs, store: dict, config: BitConfig, scored) -> torch.Tensor:
        key = (quant_key(config), str(scored))
        if key not in store:
            store[key] = docs.logits(run, config, *scored)
        return store[key]

    rows, rule_votes = [], {name: [] for name in _RULES}
    for prof in profiles:
        space = SearchSpace.from_profile(prof, run.specs)
        if sum(len(space.levels(v)) for v in space.variants()) == 1:
            continue  # one choice (x86_vnni_server: int8 per channel): nothing to search or compare
        scored = arithmetic(prof)
        pick = build.selection(prof.name).config
        prefix_pick = by_prefix.selection(prof.name).config
        uniforms = _uniforms_within(space, prof, pick)
        randoms = random_feasible(prof, run.specs, args.random, seed=args.seed)
        pool = {quant_key(c): c for c in [pick, prefix_pick, *uniforms, *randoms]}
        val_of = {k: on(val, val_logits, c, scored) for k, c in pool.items()}

        arms = {
            "search": pick,
            "prefix_search": prefix_pick,
            "uniform": _best(uniforms, val_of, val, tie),
            "best_random": _best(randoms, val_of, val, tie),
        }
        test_of = {name: on(test, test_logits, c, scored) for name, c in arms.items() if c is not None}
        row = {"profile": prof.name, "pool": len(pool), "arms": {}}
        for name, c in arms.items():
            if c is None:
                row["arms"][name] = None
                continue
            row["arms"][name] = _arm(c, val_of[quant_key(c)], test_of[name], val, test)
            if name != "search":
                pair = mcnemar(_pred(test_of["search"]), _pred(test_of[name]), list(test.labels))
                row["arms"][name]["test_vs_search"] = pair | {"same_config": quant_key(c) == quant_key(pick)}
        for name, (rule, tie_se) in _RULES.items():
            rule_votes[name].append(_held_out(list(pool.values()), val_of, val, rule, tie_se))
        rows.append(row)
        print(_line(row), flush=True)

    rules = {name: _mean_votes(v) for name, v in rule_votes.items()}
    out = {
        "what": "each profile's searched pick against the uniform within its cost, the best of random feasible "
        "configurations and an accuracy-on-a-prefix search at equal time (chosen on val, reported on test)",
        "dist": str(args.dist),
        "run": str(run.run_dir),
        "docs": {
            "fisher": len(SplitDocs.of(run, max_tokens=FISHER_TOKENS, reference=False).labels),
            "screen": len(SplitDocs.of(run, max_tokens=SCREEN_TOKENS, reference=False).labels),
            "confirm_and_pool": len(val.labels),
            "prefix_search": len(prefix.labels),
        },
        "test_docs": len(test.labels),
        "accuracy_tie_points": round(tie, 3),
        "random": args.random,
        "seconds": {
            "layer_costs": round(costs_s, 1),
            "build_search": round(build_s, 1),
            "build_search_with_costs": round(build_s + costs_s, 1),
            "prefix_search": round(prefix_s, 1),
            "total": round(time.perf_counter() - t0, 1),
        },
        "evaluations": {"build_search": build.stages, "prefix_search": by_prefix.stages},
        "rules_on_validation_halves": rules,
        "rows": rows,
        "provenance": provenance(
            __file__,
            data=read_dataset(run.run_dir / DATA).source,
            seeds=[run.settings.seed, args.seed],
            chosen_on="val",
            reported_on="test",
            threads=args.threads,
        ),
    }
    atomic_write_json(args.out, out)
    print(f"rules, held-out validation half: {rules}")
    print(f"wrote {args.out} ({out['seconds']['total']} s)")
    return 0


# name -> (rule, accuracy tie in standard errors of the half's accuracy)
_RULES = {
    "kl_within_2se": (Rule.KL, TIE_SE),
    "kl_only": (Rule.KL, math.inf),
    "accuracy_then_bits": (Rule.ACCURACY, 0.0),
}


def _uniforms_within(space: SearchSpace, prof, pick: BitConfig) -> list[BitConfig]:
    """Per variant, the highest uniform configuration within the budget costing no more logical bits than
    `pick`."""
    limit = Limit.of_profile(prof, space.n_params)
    capped = Limit(min(limit.max_logical_bits or math.inf, pick.avg_bits * pick.n_params), limit.max_container_bytes)
    out = []
    for v in space.variants():
        table = CostTable.build(space, v)
        idx = uniform_fit(table, capped)
        if idx is not None:
            out.append(space.build(table.bits(idx), v))
    return out


def _best(configs: list[BitConfig], val_of: dict, val: SplitDocs, tie: float) -> BitConfig | None:
    """The build's rule's choice among `configs` on the whole validation split (None: no configurations)."""
    scored = [(c, metrics(val_of[quant_key(c)], list(val.labels), val.reference)) for c in configs]
    return choose(scored, Rule.KL, tie)[0] if scored else None


def _pred(logits: torch.Tensor) -> list[int]:
    return logits.argmax(-1).tolist()


def _arm(config: BitConfig, val_logits, test_logits, val: SplitDocs, test: SplitDocs) -> dict:
    m_val = metrics(val_logits, list(val.labels), val.reference)
    m_test = metrics(test_logits, list(test.labels), test.reference)
    correct = sum(int(p == y) for p, y in zip(_pred(test_logits), test.labels))
    lo, hi = accuracy_interval(correct, len(test.labels))
    return {
        "key": quant_key(config),
        "summary": config.summary(),
        "cost": cost_of(config).to_dict(),
        "val": _r(m_val),
        "test": _r(m_test) | {"ci95": [round(lo, 2), round(hi, 2)]},
    }


def _r(m: Metrics) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.to_dict().items()}


def _held_out(configs: list[BitConfig], val_of: dict, val: SplitDocs, rule: Rule, tie_se: float) -> dict:
    """Pick by `rule` on one half of the validation documents, measure on the other, both ways round: the
    mean held-out accuracy and KL of the two picks."""
    n = len(val.labels)
    halves = [list(range(0, n, 2)), list(range(1, n, 2))]
    acc, kl = [], []
    for pick_on, measure_on in (halves, halves[::-1]):

        def half(config: BitConfig, rows: list[int]) -> Metrics:
            logits = val_of[quant_key(config)][rows]
            return metrics(logits, [val.labels[i] for i in rows], val.reference[rows])

        scored = [(c, half(c, pick_on)) for c in configs]
        p = max(m.accuracy for _, m in scored) / 100.0
        tie = tie_se * 100.0 * math.sqrt(max(p * (1 - p), 1e-4) / len(pick_on))
        chosen = choose(scored, rule, tie)[0]
        m = half(chosen, measure_on)
        acc.append(m.accuracy)
        kl.append(m.kl)
    return {"accuracy": sum(acc) / 2, "kl": sum(kl) / 2}


def _mean_votes(votes: list[dict]) -> dict:
    return {
        "mean_held_out_accuracy": round(sum(v["accuracy"] for v in votes) / len(votes), 3),
        "mean_held_out_kl": round(sum(v["kl"] for v in votes) / len(votes), 5),
        "profiles": len(votes),
    }


def _line(row: dict) -> str:
    parts = [row["profile"]]
    for name, arm in row["arms"].items():
        if arm is None:
            parts.append(f"{name}: none")
            continue
        pair = arm.get("test_vs_search")
        vs = (
            ""
            if pair is None
            else f", search/it right {pair['only_a_right']}/{pair['only_b_right']} p {pair['p_value']:.3g}"
        )
        parts.append(f"{name} {arm['cost']['avg_bits']:.2f} bits test {arm['test']['accuracy']:.2f}{vs}")
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
