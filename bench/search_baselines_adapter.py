"""Each profile's chosen configuration against its baselines, scored with a build's trained adapter (issue 5).

Reads a build's run and its `search.json`, then for every profile: checks the choice against the profile
with `check_constraints` (independent of the search code), and scores the uniform configuration of the same
or larger cost, the best feasible uniform one and the best of `--random` random feasible ones with the same
scorer the search used (the adapter's merged integers on the build's validation documents). The search
picked its choice on those documents, so beating a baseline there is partly selection; every configuration
is therefore scored on the test split too, which neither the search nor the baselines saw, with McNemar's
exact test of the choice against each baseline on the same test documents (how many only one of the two
classifies correctly, and the two-sided p-value of that split). The same test of the choice against the
float fine-tune itself shows how far apart two models must be before the test split can tell them apart.

    python bench/search_baselines_adapter.py --dist dist [--random 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from adapter_common import coa_logits, find_run, machine_info, paired_test, r2, split_metrics
from search_baselines import beats, best_feasible_uniform, best_random, uniform_at_least
from search_constraints import check_constraints

from toolchain.adapter import Run
from toolchain.bitconfig import BitConfig
from toolchain.build.device_search import SEARCH_DOCS, run_search_profiles, validation_scorer
from toolchain.io import atomic_write_json
from toolchain.profiles import profiles_or_default
from toolchain.search import (
    ScoreCache,
    cost_of,
    quant_key,
)

RESULTS = Path(__file__).resolve().parent / "results" / "search_baselines_adapter.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dist", type=Path, required=True, help="an `edgeq build --out` directory")
    p.add_argument("--random", type=int, default=20, help="random feasible configurations per profile")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    run = Run.load(find_run(args.dist))
    search = json.loads((args.dist / "search.json").read_text())
    profiles = run_search_profiles(run, profiles_or_default(None))  # the budgets left for the searched layers
    val = ScoreCache(validation_scorer(run, SEARCH_DOCS))
    test_labels = run.splits.test.labels
    test_logits: dict[str, torch.Tensor] = {}

    def logits(config: BitConfig) -> torch.Tensor:
        key = quant_key(config)
        if key not in test_logits:
            test_logits[key] = coa_logits(run, config, "test")
        return test_logits[key]

    def on_test(config: BitConfig) -> dict:
        return r2(split_metrics(run, logits(config), "test"))

    rows = []
    for prof in profiles:
        sel = next(s for s in search["selections"] if s["profile"] == prof.name)
        chosen = BitConfig.model_validate(sel["config"])
        chosen_val = val(chosen)
        baselines = {
            "uniform_at_least": uniform_at_least(prof, run.specs, val, cost_of(chosen)),
            "feasible_uniform": best_feasible_uniform(prof, run.specs, val),
            "best_random": best_random(prof, run.specs, val, n=args.random, seed=args.seed),
        }
        row = {
            "profile": prof.name,
            "constraint_problems": check_constraints(prof, chosen, run.specs),
            "chosen": {
                "avg_bits": chosen.avg_bits,
                "val": r2(chosen_val.to_dict()),
                "test": on_test(chosen),
                "test_paired_with_float": paired_test(logits(chosen), run.float_logits("test"), test_labels),
            },
        }
        for kind, b in baselines.items():
            if b is None:
                row[kind] = None
                continue
            same = quant_key(b.config) == quant_key(chosen)
            b_test = on_test(b.config)
            row[kind] = {
                "avg_bits": b.config.avg_bits,
                "evaluated": b.evaluated,
                "same_as_chosen": same,
                "val": r2(b.metrics.to_dict()),
                "test": b_test,
                "chosen_beats_on_val": same or beats(chosen_val, b.metrics),
                "chosen_test_minus_baseline": round(row["chosen"]["test"]["accuracy"] - b_test["accuracy"], 2),
                "test_paired": paired_test(logits(chosen), logits(b.config), test_labels),
            }
        rows.append(row)
        print(_line(row), flush=True)
    out = {
        "dist": str(args.dist),
        "run": str(run.run_dir),
        "search_docs": SEARCH_DOCS,
        "random": args.random,
        "float_test_accuracy": run.float_accuracy,
        "rows": rows,
        "validation_scores": val.evaluations,
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": machine_info(args.threads),
    }
    atomic_write_json(args.out, out)
    print(f"wrote {args.out} ({out['seconds']} s, {val.evaluations} validation scores)")
    return 0


def _line(row: dict) -> str:
    chosen = row["chosen"]
    with_float = chosen["test_paired_with_float"]
    parts = [
        f"{row['profile']}: chosen {chosen['avg_bits']:.3f} bits, test {chosen['test']['accuracy']} "
        f"(only chosen/only float right {with_float['only_a_right']}/{with_float['only_b_right']}, "
        f"p {with_float['p_value']})"
    ]
    for kind in ("uniform_at_least", "feasible_uniform", "best_random"):
        b = row[kind]
        if b is None:
            parts.append(f"{kind} none")
        else:
            paired = b["test_paired"]
            parts.append(
                f"{kind} {b['avg_bits']:.3f} bits test {b['test']['accuracy']} "
                f"(beats on val: {b['chosen_beats_on_val']}, test diff {b['chosen_test_minus_baseline']:+.2f}, "
                f"only chosen/only baseline right {paired['only_a_right']}/{paired['only_b_right']}, "
                f"p {paired['p_value']})"
            )
    problems = row["constraint_problems"]
    return "; ".join(parts) + (f"; CONSTRAINT PROBLEMS {problems}" if problems else "; constraints ok")


if __name__ == "__main__":
    sys.exit(main())
