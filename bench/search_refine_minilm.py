"""Pareto-refined vs spread-only training sets with the real adapter on MiniLM / BBC News (issue 5).

`--run` is a trained run whose training set was refined (what `edgeq build` trains: ParetoConfigSource over
the shipped profiles). This trains a second adapter on the same float stage, settings and steps with the
spread-only set (SpreadOnlySource: the same starting configurations, never refined), then scores both on
`--n` random held-out configurations at each of `--budgets` average bits (symmetric per-channel, drawn as in
bench/adapter_generalisation.py) on the test split, and reports each set's hypervolume per round.

    python bench/search_refine_minilm.py --run dist/.edgeq/run-KEY --work /tmp/edgeq-refine
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from adapter_common import coa_metrics, machine_info, r2, train_variant
from adapter_generalisation import held_out
from spread_source import SpreadOnlySource

from toolchain.adapter import Run, run_files
from toolchain.build.device_search import run_search_profiles
from toolchain.io import atomic_write_json
from toolchain.profiles import default_profiles_dir, load_profiles

RESULTS = Path(__file__).resolve().parent / "results" / "search_refine_minilm.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a run trained with the Pareto-refined set")
    p.add_argument("--work", type=Path, required=True, help="where the spread-only run is trained")
    p.add_argument("--budgets", type=float, nargs="+", default=[4.0, 3.0, 2.5])
    p.add_argument("--n", type=int, default=5, help="held-out configurations per budget")
    p.add_argument("--seed", type=int, default=1234, help="seed of the held-out configurations")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    refined = Run.load(args.run)
    history_file = args.run.parent / f"{args.run.name}.training_set.json"
    if not history_file.is_file():
        raise SystemExit(f"{history_file}: missing; --run must be an `edgeq build` run (it records its set)")
    history = json.loads(history_file.read_text())
    profiles = run_search_profiles(refined, load_profiles([default_profiles_dir()]))  # layer budgets
    source = SpreadOnlySource.for_profiles(profiles, refined.specs, seed=refined.settings.seed)
    ds = run_files.read_dataset(refined.run_dir / run_files.DATA)
    spread, spread_s = train_variant(
        refined.run_dir / run_files.FLOAT_DIR,
        ds,
        refined.run_dir,
        args.work / "spread",
        refined.settings,
        config_source=source,
    )
    rows = []
    for budget, config in held_out(refined, args.budgets, args.n, args.seed):
        row = {
            "budget": budget,
            "avg_bits": round(config.avg_bits, 4),
            "refined": r2(coa_metrics(refined, config, "test")),
            "spread": r2(coa_metrics(spread, config, "test")),
        }
        rows.append(row)
        print(
            json.dumps(
                {k: row[k] for k in ("budget", "avg_bits")} | {m: row[m]["accuracy"] for m in ("refined", "spread")}
            ),
            flush=True,
        )

    def mean(method: str, key: str, budget: float | None = None) -> float:
        return statistics.mean(r[method][key] for r in rows if budget is None or r["budget"] == budget)

    result = {
        "run": str(args.run),
        "spread_run": str(spread.run_dir),
        "settings": refined.settings.model_dump(mode="json"),
        "held_out": {"budgets": args.budgets, "n": args.n, "seed": args.seed, "split": "test"},
        "mean_accuracy": {m: round(mean(m, "accuracy"), 3) for m in ("refined", "spread")},
        "mean_kl": {m: round(mean(m, "kl"), 4) for m in ("refined", "spread")},
        "mean_accuracy_by_budget": {
            str(b): {m: round(mean(m, "accuracy", b), 3) for m in ("refined", "spread")} for b in args.budgets
        },
        "hypervolume_per_round": {
            "refined": [h["set_hypervolume"] for h in history],
            "spread": [h["set_hypervolume"] for h in source.history],
        },
        # comparable only under one reference point: both sets are scored by identical adapters at the
        # first round (same seed, same set until then), so their first-round references should agree
        "hypervolume_reference": {"refined": history[0]["reference"], "spread": source.history[0]["reference"]},
        "spread_training_wall_s": round(spread_s, 1),
        "rows": rows,
        "machine": machine_info(args.threads),
    }
    atomic_write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("mean_accuracy", "mean_kl", "hypervolume_per_round")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
