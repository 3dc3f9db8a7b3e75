"""Merge-then-round, the integer merge and the int8 adapter branch side by side at equal budgets (issue 4).

Reads a build's two runs (the merged run and the adapter-branch run beside it, which a build trains when a
profile allows a branch) and, at each budget (logical bits per weight, the branch's bytes included), picks
each method's configuration the way the build picks the branch's: the search's first proposals at
the budget (no correction rounds or moves), scored on the whole validation split, the branch at each
nested rank in what its bytes leave of the budget (toolchain.build.branch.choose_variant). The
space is aggressive_2bit's (2-4 bits, symmetric or asymmetric, per channel): the branch run's.

- integer merge: the merged run's integers (what ships by default);
- merge-then-round: the branch run's adapter added to its dequantized weight and rounded onto the grid
  again (the naive path), on the integer merge's configuration;
- int8 branch: frozen integers + int8 factors, the rank and configuration validation picked; every rank's
  candidate is reported too, with its share of the budget.

Everything is then scored on the test split, which no choice saw.

A build's branch run trains only on base configurations its branch profiles can afford beside a branch
(aggressive_2bit's 2.5 bits), so at 3 and 4 bits it would be scored outside what it trained on. For every
budget, pass `--branch-run` a branch run trained on the whole spread: bench/adapter_branch_training.py
trains one ("spread, 200 steps", same float fine-tune and steps as the merged run).

    python bench/adapter_branch.py --dist dist [--branch-run RUN] [--budgets 4 3 2.5 2.25] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from adapter_common import find_run, r2
from record import provenance
from search_constraints import check_constraints

from toolchain.adapter import Run
from toolchain.adapter.run_files import DATA, read_dataset
from toolchain.build.branch import choose_variant, seeds_only
from toolchain.build.device_search import run_layer_costs, validation_scorer
from toolchain.io import atomic_write_json
from toolchain.profiles import Budget, default_profiles_dir, load_profile
from toolchain.search import select_configs

RESULTS = Path(__file__).resolve().parent / "results" / "adapter_branch.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dist", type=Path, required=True, help="an `edgeq build --out` directory")
    p.add_argument("--budgets", type=float, nargs="+", default=[4.0, 3.0, 2.5, 2.25])
    p.add_argument("--branch-run", type=Path, default=None, help="a branch run (default: the build's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    hint = "; build with a profile that allows an adapter branch (aggressive_2bit) first"
    merged = Run.load(find_run(args.dist, hint))
    branch = Run.load(args.branch_run or find_run(args.dist, hint, branch=True))
    if branch.settings.float_digest() != merged.settings.float_digest():
        raise SystemExit(f"{branch.run_dir}: fine-tuned from another float stage than {merged.run_dir}")
    base_profile = load_profile(default_profiles_dir() / "aggressive_2bit.yaml")
    costs = run_layer_costs(merged, [base_profile])
    score_merged = validation_scorer(merged)
    score_branch = validation_scorer(branch)
    rows = []
    for budget in args.budgets:
        profile = base_profile.model_copy(update={"budget": Budget(max_avg_bits=budget)})
        pick = select_configs([profile], merged.specs, score_merged, costs=costs, settings=seeds_only())
        choice = choose_variant(
            profile, pick.selections[0], merged.settings.rank, merged.specs, score_branch, costs, [8, 4, 2, 1]
        )
        config = choice.merged.config
        row = {
            "budget": budget,
            "integer_merge": _entry(merged, config, choice.merged.metrics, profile),
            "merge_then_round": _entry(branch, config, None, profile),
            "int8_branch": None
            if choice.branch is None
            else _entry(branch, choice.branch.config, choice.branch.metrics, profile),
            "branch_ranks_validation": {str(r): m for r, m in choice.ranks_tried.items()},
            "build_would_ship": "branch" if choice.use_branch else "merged",
        }
        rows.append(row)
        _print(row)
    out = {
        "what": "integer merge vs merge-then-round vs int8 branch at equal budgets (bits include the branch)",
        "dist": str(args.dist),
        "branch_run": {"dir": str(branch.run_dir), "steps": branch.settings.steps},
        "space": "aggressive_2bit: 2-4 bits, symmetric/asymmetric, per channel",
        "choice": "the search's first proposals (exact allocation under the Fisher layer costs, and the uniform), "
        "on the whole validation split; test reported",
        "float_test_accuracy": merged.float_accuracy,
        "rows": rows,
        "seconds": round(time.perf_counter() - t0, 1),
        "provenance": provenance(
            __file__,
            data=read_dataset(merged.run_dir / DATA).source,
            seeds=[merged.settings.seed],
            chosen_on="val",
            reported_on="test",
            threads=args.threads,
        ),
    }
    atomic_write_json(args.out, out)
    print(f"wrote {args.out} ({out['seconds']} s)")
    return 0


def _entry(run: Run, config, val_metrics, profile) -> dict:
    test = run.score(config, "test")
    return {
        "avg_bits": round(config.avg_bits, 4),
        "branch_rank": config.branch_rank,
        "branch_bits": round(config.branch_bits, 4),
        "constraints": check_constraints(profile, config, run.specs),
        "validation": None if val_metrics is None else r2(val_metrics.to_dict()),
        "test": r2(test.to_dict()),
    }


def _print(row: dict) -> None:
    parts = [f"budget {row['budget']:g}:"]
    for k in ("integer_merge", "merge_then_round", "int8_branch"):
        e = row[k]
        if e is None:
            parts.append(f"{k} (no rank fits)")
            continue
        rank = f" r{e['branch_rank']} ({e['branch_bits']:.3f} b)" if e["branch_rank"] else ""
        parts.append(f"{k}{rank} {e['avg_bits']:.3f} b: {e['test']['accuracy']:.2f} %, KL {e['test']['kl']:.4f}")
    print("  ".join(parts), flush=True)


if __name__ == "__main__":
    sys.exit(main())
