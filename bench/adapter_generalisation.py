"""Generalisation of one configuration-aware adapter run to configurations it never trained on.

For `--n` random held-out configurations at each of `--budgets` average bits (logical, scale overhead
included; symmetric per-channel; per-layer bit-widths spread by `random_config_at`), on the test split:

    coa        the run's merged integers (Run.quantized_model: what ships)
    ptq        MSE-clipped post-training quantization of the float fine-tune (the strongest PTQ baseline)
    coa_vs_ptq McNemar's exact test of the two on the same documents (only CoA right, only PTQ right, p)
    naive      a float side adapter (a `--naive-run` trained with forward=branch) merged, then rounded again
    branch     that side adapter unmerged, in float (the deployable-branch upper bound, factors not quantized)
    per_config (--per-config K) LoRA trained on one configuration only, same steps, merged the same way

Also: generate() time per configuration, merge exactness (training forward against the generated integer
model), accuracy against DyLoRA rank, and the runs' wall times.

    python bench/adapter_generalisation.py --run RUN_DIR [--naive-run RUN_DIR] [--per-config 2]
    python bench/adapter_generalisation.py --work /tmp/edgeq-gen     # trains the default run first
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from adapter_common import (
    changed_fraction,
    coa_logits,
    coa_metrics,
    machine_info,
    paired_test,
    ptq_logits,
    r2,
    split_metrics,
    split_of,
    train_variant,
    training_forward_metrics,
)
from random_configs import random_config_at

from toolchain.adapter import (
    FixedConfigSource,
    Grid,
    Run,
    TrainSettings,
    make_config,
    run_files,
    train,
)
from toolchain.data import load_dataset
from toolchain.evaluate import encode
from toolchain.io import atomic_write_json
from toolchain.models import default_model_path
from toolchain.quant.core import int_range

RESULTS = Path(__file__).resolve().parent / "results" / "adapter_generalisation.json"


BUDGETS = [4.0, 3.0, 2.5, 2.25]  # the held-out draw's budgets, in the order drawn (it fixes the configurations)


def add_draw_args(p: argparse.ArgumentParser, budgets: bool = True) -> None:
    """The held-out draw's options, with the defaults every adapter bench shares (the same configurations,
    under the same digests, in each one's results); `budgets=False` leaves the draw's budgets fixed."""
    if budgets:
        p.add_argument("--budgets", type=float, nargs="+", default=BUDGETS)
    p.add_argument("--n", type=int, default=5, help="held-out configurations per budget")
    p.add_argument("--seed", type=int, default=1234, help="seed of the held-out configurations")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=None, help="a trained run directory (default: train one in --work)")
    p.add_argument("--work", type=Path, default=None, help="where to train the default run if --run is not given")
    p.add_argument("--naive-run", type=Path, default=None, help="a run trained with forward=branch")
    add_draw_args(p)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--per-config", type=int, default=0, help="per-configuration LoRA baselines to train")
    p.add_argument(
        "--per-config-budgets", type=float, nargs="+", default=None,
        help="train them on these budgets' configurations only (default: all, lowest budget first)",
    )  # fmt: skip
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def held_out(run: Run, budgets: list[float], n: int, seed: int) -> list[tuple[float, object]]:
    rng = random.Random(seed)
    return [
        (b, random_config_at(run.specs, b, rng, bits=run.settings.bits, grid=Grid())) for b in budgets for _ in range(n)
    ]


def generate_seconds(run: Run, configs) -> dict:
    times = []
    for _, config in configs:
        t0 = time.perf_counter()
        run.generate(config)
        times.append(time.perf_counter() - t0)
    return {"median": round(statistics.median(times), 3), "max": round(max(times), 3), "n": len(times)}


def merge_exactness(run: Run, configs, split: str, n_docs: int = 32) -> dict:
    """Issue 4's exactness item on the real model: the largest |logit difference| between the training-time
    forward and the generated integer model (Run.quantized_model, what ships) over every configuration,
    on the first `n_docs` documents of `split`, and whether every generated integer is in its range."""
    inputs = encode(run.tokenizer, split_of(run, split).texts[:n_docs], run.settings.max_length)
    worst, in_range = 0.0, True
    with torch.no_grad():
        for _, config in configs:
            run.adapter_model.set_config(config)
            trained = run.adapter_model(**inputs)
            worst = max(worst, (trained - run.quantized_model(config)(**inputs).logits).abs().max().item())
            for qw in run.generate(config).values():
                lo, hi = int_range(qw.bits, qw.scheme)
                in_range &= lo <= qw.q.min().item() and qw.q.max().item() <= hi
    return {"max_abs_diff": worst, "integers_in_range": in_range, "configs": len(configs), "documents": n_docs}


def config_row(run: Run, naive: Run | None, budget: float, config, split: str, row: dict) -> dict:
    """Fill in whatever `row` (from an earlier invocation) lacks."""
    row = row or {"budget": budget, "avg_bits": round(config.avg_bits, 4), "bits": config.bits_vector()}
    if "coa_vs_ptq" not in row:
        coa, ptq = coa_logits(run, config, split), ptq_logits(run, config, split)
        row["coa"], row["ptq"] = r2(split_metrics(run, coa, split)), r2(split_metrics(run, ptq, split))
        row["coa_vs_ptq"] = paired_test(coa, ptq, split_of(run, split).labels)  # only_a: CoA, only_b: PTQ
        row["coa_changed_fraction"] = round(changed_fraction(run, config), 5)
    if naive is not None and "naive" not in row:
        row["naive"] = r2(coa_metrics(naive, config, split))
        row["branch"] = r2(training_forward_metrics(naive, config, split))
        row["naive_changed_fraction"] = round(changed_fraction(naive, config), 5)
    return row


def rank_rows(run: Run, configs, ranks: list[int], split: str) -> list[dict]:
    uniform2 = make_config(run.specs, [2] * len(run.specs), [Grid()] * len(run.specs))
    picks = [("uniform 2-bit", uniform2)] + [(f"held-out {b} bits", c) for b, c in configs[-1:]]
    return [{"config": name, "rank": r, **r2(coa_metrics(run, c, split, rank=r))} for name, c in picks for r in ranks]


def per_config_rows(run: Run, configs, k: int, split: str, work: Path, done: dict, save) -> dict:
    """LoRA fine-tuned on one configuration each (same settings and steps), at the lowest budgets; `save(done)`
    after each, so an interrupted invocation keeps what it trained."""
    full = load_dataset_of(run)
    for budget, config in configs[::-1][:k]:
        if config.digest() in done:
            continue
        run_dir = work / f"per-config-{config.digest()}"
        single, seconds = train_variant(
            default_model_path(), full, run.run_dir, run_dir, run.settings,
            config_source=FixedConfigSource([config]), progress=True,
        )  # fmt: skip
        done[config.digest()] = {
            "budget": budget,
            "avg_bits": round(config.avg_bits, 4),
            "train_seconds": round(seconds, 1),
            "per_config": r2(coa_metrics(single, config, split)),
            "coa": r2(coa_metrics(run, config, split)),
        }
        print(done[config.digest()], flush=True)
        save(done)
    return done


def load_dataset_of(run: Run):
    return run_files.read_dataset(run.run_dir / run_files.DATA)


def earlier_result(args: argparse.Namespace) -> dict:
    """The output of an earlier invocation on the same run and held-out draw, to extend; else empty."""
    if not args.out.is_file():
        return {}
    old = json.loads(args.out.read_text())
    same = (old.get("run"), old.get("draw")) == (str(args.run), draw_of(args))
    return old if same else {}


def draw_of(args: argparse.Namespace) -> dict:
    return {"budgets": args.budgets, "n": args.n, "seed": args.seed, "split": args.split}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.run is None:
        if args.work is None:
            raise SystemExit("give --run RUN_DIR or --work DIR")
        train(default_model_path(), load_dataset(), args.work / "default", TrainSettings())
        args.run = args.work / "default"
    run, naive = Run.load(args.run), (Run.load(args.naive_run) if args.naive_run else None)
    configs = held_out(run, args.budgets, args.n, args.seed)
    result = earlier_result(args) or {
        "run": str(args.run),
        "draw": draw_of(args),
        "settings": run.settings.model_dump(mode="json"),
        "float_test": run.info["float_test"],
        "run_timings_s": run.info["timings_s"],
        "generate_seconds": generate_seconds(run, configs),
        "rows": {},
    }
    if naive is not None:
        result["naive_run"] = {"dir": str(args.naive_run), "settings": naive.settings.model_dump(mode="json")}
    for budget, config in configs:
        key = config.digest()
        result["rows"][key] = config_row(run, naive, budget, config, args.split, result["rows"].get(key))
        print({k: v for k, v in result["rows"][key].items() if k != "bits"}, flush=True)
        atomic_write_json(args.out, result | {"machine": machine_info(args.threads)})
    if "exactness" not in result:
        result["exactness"] = merge_exactness(run, configs, args.split)
        print(result["exactness"], flush=True)
    if args.ranks and "ranks" not in result:
        result["ranks"] = rank_rows(run, configs, args.ranks, args.split)
    if args.per_config:
        work = args.work or args.run.parent

        def save(done: dict) -> None:
            atomic_write_json(args.out, result | {"per_config": done, "machine": machine_info(args.threads)})

        budgets = args.per_config_budgets or args.budgets
        result["per_config"] = per_config_rows(
            run, [(b, c) for b, c in configs if b in budgets], args.per_config, args.split, work,
            result.get("per_config", {}), save,
        )  # fmt: skip
    atomic_write_json(args.out, result | {"machine": machine_info(args.threads)})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
