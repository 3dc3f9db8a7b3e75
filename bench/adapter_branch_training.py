"""What the adapter-branch run should train on, and for how long (issue 4 item 5; the build's branch run).

A build trains the branch run only for the profiles that allow a branch (aggressive_2bit: 2.5 bits per
weight, a branch included). This trains three branch runs beside a build's merged run, sharing its float
fine-tune, and scores the same configurations with each on the test and validation splits:

- spread, the merged run's steps: configurations spread over 2-4 bits (what builds trained before);
- spread, half the steps;
- budgeted, half the steps: only base configurations a branch profile can afford beside a rank-1 branch
  (`toolchain.build.branch_training.branch_training_filter`; what a build trains now).

The configurations: uniform 2-bit asymmetric per channel (the region aggressive_2bit ships a branch in) at
branch ranks 1, 2 and 4, uniform 2-bit symmetric at rank 2, and uniform 3-bit symmetric at rank 2, which is
over what the budgeted run trains on (reported to show what it gives up). KL to the float model separates
the runs where accuracy is within a few documents.

    python bench/adapter_branch_training.py --dist dist [--work DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from adapter_common import find_run
from record import provenance

from toolchain.adapter import ForwardMode, RandomConfigSource, Run, train
from toolchain.adapter.run_files import DATA, read_dataset, share_float_stages
from toolchain.bitconfig import BitConfig, config_from_bits
from toolchain.build.branch_training import branch_steps, branch_training_filter, branch_training_source
from toolchain.build.training import training_settings
from toolchain.io import atomic_write_json
from toolchain.models import default_model_path
from toolchain.profiles import default_profiles_dir, load_profile
from toolchain.quant.core import Scheme

RESULTS = Path(__file__).resolve().parent / "results" / "adapter_branch_training.json"


def configs(specs) -> dict[str, BitConfig]:
    asym = config_from_bits(specs, 2, scheme=Scheme.ASYMMETRIC)
    with_rank = {f"2-bit asymmetric, rank {r}": asym.model_copy(update={"branch_rank": r}) for r in (1, 2, 4)}
    return with_rank | {
        "2-bit symmetric, rank 2": config_from_bits(specs, 2).model_copy(update={"branch_rank": 2}),
        "3-bit symmetric, rank 2": config_from_bits(specs, 3).model_copy(update={"branch_rank": 2}),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dist", type=Path, required=True, help="an `edgeq build --out` directory (its merged run)")
    p.add_argument("--work", type=Path, default=Path("bench-work/branch-training"), help="where the runs go")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    merged = Run.load(find_run(args.dist))
    profile = load_profile(default_profiles_dir() / "aggressive_2bit.yaml")
    half = branch_steps(merged.settings.steps)
    admits = branch_training_filter([profile], merged.specs)
    if admits is None:
        raise SystemExit(f"{profile.name}: no branch fits beside any base configuration of this model")
    variants = {
        f"spread, {merged.settings.steps} steps": (merged.settings.steps, False),
        f"spread, {half} steps": (half, False),
        f"budgeted, {half} steps": (half, True),
    }
    dataset = read_dataset(merged.run_dir / DATA)  # the merged run's data: the same seeded split
    rows, trained = [], {}
    for name, (steps, budgeted) in variants.items():
        keep_run = {"seed": merged.settings.seed, "rank": merged.settings.rank, "steps": steps}
        settings = training_settings([profile], forward=ForwardMode.BRANCH, **keep_run)
        run_dir = args.work / f"{'budgeted' if budgeted else 'spread'}-{settings.digest()}"
        share_float_stages(merged.run_dir, run_dir)
        source = (
            branch_training_source([profile], merged.specs, settings.bits, settings.grids)  # what a build trains on
            if budgeted
            else RandomConfigSource(merged.specs, settings.bits, settings.grids)
        )
        run = train(default_model_path(), dataset, run_dir, settings, config_source=source)
        adapter = run.info["timings_s"]["adapter"]  # as the run recorded it (a rerun reuses finished runs)
        trained[name] = {"steps": steps, "wall_s": adapter["wall_s"], "cpu_s": adapter["cpu_s"], "run": str(run_dir)}
        for label, config in configs(run.specs).items():
            test, val = run.score(config, "test"), run.score(config, "val")
            rows.append(
                {
                    "run": name,
                    "config": label,
                    "avg_bits": round(config.avg_bits, 4),
                    "in_budgeted_training_set": admits(config.model_copy(update={"branch_rank": None})),
                    "test": test.to_dict(),
                    "validation": val.to_dict(),
                }
            )
            print(f"{name:22s} {label:26s} test {test.accuracy:6.2f} % KL {test.kl:.4f}", flush=True)
    atomic_write_json(
        args.out,
        {
            "what": "branch runs: spread vs budgeted training configurations, and steps",
            "dist": str(args.dist),
            "profile": profile.name,
            "runs": trained,
            "rows": rows,
            "seconds": round(time.perf_counter() - t0, 1),
            "provenance": provenance(
                __file__,
                data=dataset.source,
                seeds=[merged.settings.seed],
                chosen_on="val",
                reported_on="test",
                threads=args.threads,
            ),
        },
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
