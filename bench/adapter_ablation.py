"""Which ingredient lets the merged-integer adapter move integers and gain accuracy at 2 and 3 bits?

One float fine-tune (shared), then one adapter training per variant, all with the same steps, batch, seed
and training configuration set (random per-layer bit-widths spread over 2..8 bits, symmetric per-channel):

    plain           delta in weight units (plain LoRA scale), no residual, CE only   (the first shipped recipe)
    step            + delta in units of the grid step (step-size-aware)
    step+res        + rounding residual of the float weight (boundary-aware start)
    step+res+kd     + distillation from the float model (KL on cached logits) = the default
    weight+res+kd   the default with weight units (does the unit matter once the rest is on?)
    branch          float side adapter over the frozen integers, then merged and rounded (the naive path)
    peqa+kd         no integer moves (alpha ~ 0): only the PEQA scales and the head have an effect
    step+res+kd-a64 the default with alpha 64 instead of 16 (more integer movement)

Each is scored on the test split at uniform 2 and 3 bits (symmetric per-channel): accuracy, agreement
with and KL from the float model, and the fraction of integers moved off the MSE-clipped base.

    python bench/adapter_ablation.py --work /tmp/edgeq-ablation        # ~6 x 5 minutes on 2 quiet cores
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from adapter_common import (
    changed_fraction,
    coa_metrics,
    float_stage_run,
    machine_info,
    ptq_metrics,
    r2,
    train_variant,
    training_forward_metrics,
)

from toolchain.adapter import DeltaUnits, ForwardMode, Grid, TrainSettings, make_config
from toolchain.data import load_dataset
from toolchain.io import atomic_write_json
from toolchain.models import default_model_path

RESULTS = Path(__file__).resolve().parent / "results" / "adapter_ablation.json"
VARIANTS = {
    "plain": {"units": DeltaUnits.WEIGHT, "alpha": 2.0, "residual": False, "distill_weight": 0.0},
    "step": {"residual": False, "distill_weight": 0.0},
    "step+res": {"distill_weight": 0.0},
    "step+res+kd": {},
    "weight+res+kd": {"units": DeltaUnits.WEIGHT, "alpha": 2.0},
    "branch": {"forward": ForwardMode.BRANCH},
    "peqa+kd": {"alpha": 1e-6, "residual": False},
    "step+res+kd-a64": {"alpha": 64.0},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="directory for the run directories")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=None, help="adapter steps (default: TrainSettings default)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def base_settings(args: argparse.Namespace) -> TrainSettings:
    extra = {"steps": args.steps} if args.steps is not None else {}
    return TrainSettings(grids=[Grid()], **extra)


def score_variant(run, name: str, split: str) -> dict:
    row = {}
    for bits in (2, 3):
        config = make_config(run.specs, [bits] * len(run.specs), [Grid()] * len(run.specs))
        entry = {
            "shipped": r2(coa_metrics(run, config, split)),
            "changed_fraction": round(changed_fraction(run, config), 5),
        }
        if name == "branch":
            entry["float_branch"] = r2(training_forward_metrics(run, config, split))
        row[f"{bits}bit"] = entry
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    ds, model_dir, base = load_dataset(), default_model_path(), base_settings(args)
    float_dir = float_stage_run(model_dir, ds, args.work, base)
    result = {"machine": None, "settings": base.model_dump(mode="json"), "variants": {}, "ptq": {}}
    if args.out.is_file():  # add to an earlier invocation's variants (same base settings only)
        earlier = json.loads(args.out.read_text())
        if earlier.get("settings") == result["settings"]:
            result = earlier
    for name in args.variants:
        settings = base.model_copy(update=VARIANTS[name])
        run, seconds = train_variant(model_dir, ds, float_dir, args.work / name, settings)
        if not result["ptq"]:
            result["float_test"] = run.info["float_test"]
            for bits in (2, 3):
                config = make_config(run.specs, [bits] * len(run.specs), [Grid()] * len(run.specs))
                result["ptq"][f"{bits}bit"] = r2(ptq_metrics(run, config, args.split))
        row = {
            "overrides": {k: str(v) for k, v in VARIANTS[name].items()},
            "train_seconds": round(seconds, 1),
        }
        result["variants"][name] = row | score_variant(run, name, args.split)
        print(name, result["variants"][name], flush=True)
        result["machine"] = machine_info(args.threads)
        atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
