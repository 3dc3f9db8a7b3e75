"""Would another ranking of the search's scores pick better configurations? (issue 5, selection noise)

Replays a build's search (deterministic: same run, profiles and seed give the same scores; checked against
the build's search.json), records every configuration it scored on the validation documents, scores each
on the test split as well, and then, per profile and among its feasible scored configurations, compares
what each ranking rule picks by its test accuracy, next to the best test accuracy in that pool.

    python bench/search_selection_rules.py --dist dist [--out FILE] [--test-scores EARLIER_OUT]

`--test-scores` reuses the test scores of an earlier output on the same run (by configuration key), so that
trying a new rule costs the replay only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from adapter_common import find_run, machine_info, r2

from toolchain.adapter import Run
from toolchain.build.device_search import SEARCH_DOCS, run_search_profiles, search_run, validation_scorer
from toolchain.io import atomic_write_json
from toolchain.profiles import profiles_or_default
from toolchain.search import Limit, SearchSpace, quant_key

RESULTS = Path(__file__).resolve().parent / "results" / "search_selection_rules.json"


def _by(key):
    """A rule that picks the feasible configuration whose validation metrics sort first under `key`."""
    return lambda feasible: min(feasible, key=lambda r: key(r["val"]))


def _most_bits_within(docs: int):
    """Among configurations within `docs` validation documents of the best accuracy, the most bits (then
    lowest KL): a score difference the documents cannot resolve is left to the prior that more bits help."""

    def pick(feasible):
        best = max(r["val"]["accuracy"] for r in feasible)
        slack = 100.0 * docs / SEARCH_DOCS + 1e-6
        near = [r for r in feasible if r["val"]["accuracy"] >= best - slack]
        return min(near, key=lambda r: (-round(r["config"].avg_bits, 6), r["val"]["kl"]))

    return pick


RULES = {  # each picks one of a profile's feasible scored configurations from their validation metrics
    "accuracy, then KL (rank_key; the search's rule before selection_key)": _by(lambda m: (-m["accuracy"], m["kl"])),
    "KL only": _by(lambda m: m["kl"]),
    "agreement with float, then KL": _by(lambda m: (-m["agreement"], m["kl"])),
    "accuracy points + KL (error_of)": _by(lambda m: (100 - m["accuracy"]) + m["kl"]),
    "accuracy, then most bits, then KL (the search's selection_key)": _most_bits_within(0),
    "most bits within 1 document of the best accuracy": _most_bits_within(1),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dist", type=Path, required=True, help="an `edgeq build --out` directory")
    p.add_argument("--seed", type=int, default=0, help="the build's --seed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--test-scores", type=Path, default=None, help="an earlier output on this run: its test scores")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    run = Run.load(find_run(args.dist))
    profiles = run_search_profiles(run, profiles_or_default(None))  # the budgets left for the searched layers
    scored: dict[str, tuple] = {}

    def recording(table):
        val = validation_scorer(run, SEARCH_DOCS, table)

        def score(config):
            m = val(config)
            scored[quant_key(config)] = (config, m)
            return m

        return score

    result = search_run(run, profiles, seed=args.seed, progress=False, scorer_for=recording)
    built = {s["profile"]: s["key"] for s in json.loads((args.dist / "search.json").read_text())["selections"]}
    replayed = {s.profile: quant_key(s.config) for s in result.selections}
    if replayed != built:
        raise SystemExit(f"the replayed search chose {replayed}, the build {built}: not the same search")
    earlier = {}
    if args.test_scores is not None:
        earlier = {r["key"]: r["test"] for r in json.loads(args.test_scores.read_text())["pool"]}
    pool = []
    for k, (config, m) in scored.items():
        test = earlier.get(k) or r2(run.score(config, "test").to_dict())
        pool.append({"key": k, "config": config, "val": r2(m.to_dict()), "test": test})
        print(
            f"{len(pool)}/{len(scored)} {config.avg_bits:.3f} bits: "
            f"val {m.accuracy:.2f} test {pool[-1]['test']['accuracy']:.2f}",
            flush=True,
        )
    n = sum(s.out_features * s.in_features for s in run.specs)
    rows = []
    for prof in profiles:
        space, limit = SearchSpace.from_profile(prof, run.specs), Limit.of_profile(prof, n)
        feasible = [r for r in pool if (a := space.adopt(r["config"])) is not None and limit.admits(a)]
        row = {
            "profile": prof.name,
            "feasible_scored": len(feasible),
            "best_test": max(r["test"]["accuracy"] for r in feasible),
        }
        for name, rule in RULES.items():
            pick = rule(feasible)
            row[name] = {"key": pick["key"], "avg_bits": pick["config"].avg_bits, "test": pick["test"]}
        rows.append(row)
    means = {name: statistics.mean(r[name]["test"]["accuracy"] for r in rows) for name in RULES}
    means["best in the pool (oracle)"] = statistics.mean(r["best_test"] for r in rows)
    out = {
        "dist": str(args.dist),
        "search_docs": SEARCH_DOCS,
        "scored": len(pool),
        "rows": rows,
        "mean_test_accuracy": {k: round(v, 3) for k, v in means.items()},
        "pool": [{k: v for k, v in r.items() if k != "config"} | {"avg_bits": r["config"].avg_bits} for r in pool],
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": machine_info(args.threads),
    }
    atomic_write_json(args.out, out)
    for r in rows:
        picks = "; ".join(f"{name}: {r[name]['test']['accuracy']:.2f} @ {r[name]['avg_bits']:.3f}" for name in RULES)
        print(f"{r['profile']} ({r['feasible_scored']} feasible): {picks}; best in pool {r['best_test']:.2f}")
    print("mean test accuracy:", json.dumps(out["mean_test_accuracy"]))
    print(f"wrote {args.out} ({out['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
