"""The build's adapter retrained with one or more settings changed, on the held-out configurations.

A build's adapter trains on the search's configuration set across 2..8 bits, two configurations per step.
Counting its product in steps of each layer's own grid (units=step, the default until COARSE_STEP), it
trailed a per-configuration LoRA at 4 bits only, on the held-out configurations of
`adapter_generalisation.py` (results/adapter_generalisation_build_step.json).

This bench retrains the build's adapter once per variant (a name and TrainSettings overrides): the same
float stage, settings, seed and Pareto configuration set as `edgeq build`, with only the overrides changed
(`adapter_equals_run` records whether the adapter is byte-identical to the build's). It scores every
held-out configuration on the validation and test splits, beside MSE-clipped PTQ; validation is the split
to choose on. On test each is also compared with the per-configuration LoRAs of `--per-config`.

Overrides apply to the settings the `--run` recorded. results/adapter_variants.json holds every variant
tried, with its overrides, on a build run from before COARSE_STEP became the default (units=step):

    python bench/adapter_variants.py --run DIST/.edgeq/run-XXXX --work /tmp/edgeq-variants \
        --variant mean weighting=mean units=step --variant geometric weighting=geometric units=step \
        --variant coarse-step units=coarse-step

- `mean` is that build's own settings: a variant equal to the run's settings scores the run's adapter
  (the stored `mean` entry was retrained once, and its adapter matched the build's byte for byte);
- `geometric` adds each configuration's loss by its logarithm (ConfigWeighting);
- `coarse-step` counts the adapter product in steps of the run's lowest bit-width (DeltaUnits): today's
  default.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from adapter_common import coa_logits, machine_info, ptq_logits, r2, split_metrics, train_variant
from adapter_generalisation import add_draw_args, held_out, load_dataset_of

from toolchain.adapter import Run, TrainSettings, run_files
from toolchain.io import atomic_write_json, sha256_file
from toolchain.models import default_model_path
from toolchain.profiles import default_profiles_dir, load_profiles
from toolchain.search import ParetoConfigSource
from toolchain.search.sensitivity import module_type

RESULTS = Path(__file__).resolve().parent / "results" / "adapter_variants.json"
SPLITS = ("val", "test")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="the finished run of a default `edgeq build`")
    p.add_argument("--work", type=Path, required=True, help="where to train the variants")
    p.add_argument(
        "--variant", nargs="+", action="append", required=True, metavar=("NAME", "KEY=VALUE"),
        help="a variant's name, then the TrainSettings fields it overrides (repeat the option per variant)",
    )  # fmt: skip
    add_draw_args(p)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--per-config", type=Path, default=RESULTS.with_name("adapter_generalisation_build_step.json"))
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def overrides(args: list[str]) -> dict[str, str]:
    """{field: value} from KEY=VALUE arguments (TrainSettings validates the values)."""
    bad = [a for a in args if "=" not in a]
    if bad:
        raise SystemExit(f"--variant: {bad[0]!r} is not KEY=VALUE")
    return dict(a.split("=", 1) for a in args)


def variant_settings(build_run: Run, changes: dict[str, str]) -> TrainSettings:
    """The build's settings with `changes` applied and validated."""
    unknown = sorted(changes.keys() - TrainSettings.model_fields.keys())
    if unknown:
        raise SystemExit(f"--variant: {unknown[0]!r} is not a TrainSettings field")
    return TrainSettings.model_validate(build_run.settings.model_dump() | changes)


def train_settings(build_run: Run, settings: TrainSettings, work: Path) -> tuple[Run, float]:
    """The build's adapter retrained under `settings` (its float stage shared), on the Pareto configuration
    set over the default profiles that `edgeq build` trains on."""
    profiles = load_profiles(sorted(default_profiles_dir().glob("*.yaml")))
    source = ParetoConfigSource.for_profiles(profiles, build_run.specs, seed=settings.seed, probe_group=module_type)
    return train_variant(
        default_model_path(), load_dataset_of(build_run), build_run.run_dir, work / f"variant-{settings.digest()}",
        settings, config_source=source, progress=True,
    )  # fmt: skip


def per_config_baseline(path: Path, run: Path) -> dict:
    """{config digest: test accuracy} of the per-configuration LoRAs trained on `run` (empty if none)."""
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    if old.get("run") != str(run) or old.get("draw", {}).get("split") != "test":
        return {}
    return {k: r["per_config"]["accuracy"] for k, r in old.get("per_config", {}).items()}


def summary(rows: dict, baselines: dict[str, dict], split: str) -> dict:
    """Per budget: mean accuracy and KL, and the worst and mean accuracy difference to each baseline
    ({name: {config digest: accuracy}}) on `split`."""
    out = {}
    for budget in sorted({r["budget"] for r in rows.values()}):
        keys = [k for k, r in rows.items() if r["budget"] == budget]
        out[str(budget)] = {
            "accuracy": round(statistics.mean(rows[k][split]["accuracy"] for k in keys), 3),
            "kl": round(statistics.mean(rows[k][split]["kl"] for k in keys), 4),
        }
        for name, accuracy in baselines.items():
            diffs = [rows[k][split]["accuracy"] - accuracy[k] for k in keys if k in accuracy]
            if diffs:
                out[str(budget)] |= {
                    f"minus_{name}_min": round(min(diffs), 3),
                    f"minus_{name}_mean": round(statistics.mean(diffs), 3),
                }
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    build_run = Run.load(args.run)
    configs = held_out(build_run, args.budgets, args.n, args.seed)
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    draw = {"budgets": args.budgets, "n": args.n, "seed": args.seed}
    result = old if (old.get("run"), old.get("draw")) == (str(args.run), draw) else {}
    result = result or {"run": str(args.run), "draw": draw, "ptq": {}, "variants": {}}

    def save() -> None:
        atomic_write_json(args.out, result | {"machine": machine_info(args.threads)})

    for _, config in configs:
        if config.digest() not in result["ptq"]:
            result["ptq"][config.digest()] = {
                s: r2(split_metrics(build_run, ptq_logits(build_run, config, s), s)) for s in SPLITS
            }
            save()
    per_config = per_config_baseline(args.per_config, args.run)
    for name, *pairs in args.variant:
        changes = overrides(pairs)
        settings = variant_settings(build_run, changes)
        variant = result["variants"].get(name)
        if variant is not None and variant["settings_digest"] != settings.digest():
            raise SystemExit(f"--variant {name}: {args.out} holds it under other settings; name it differently")
        if variant is None and settings.digest() == build_run.settings.digest():
            variant = result["variants"][name] = {
                "run": str(build_run.run_dir),  # the build's own settings: its adapter, not retrained
                "settings_digest": settings.digest(),
                "train_seconds": None,
                "rows": {},
            }
        elif variant is None:
            run, seconds = train_settings(build_run, settings, args.work)
            variant = result["variants"][name] = {
                "run": str(run.run_dir),
                "settings_digest": run.settings.digest(),
                "train_seconds": round(seconds, 1),
                "rows": {},
            }
        variant["overrides"] = changes
        run = Run.load(variant["run"])
        adapter = run_files.ADAPTER
        variant["adapter_equals_run"] = sha256_file(run.run_dir / adapter) == sha256_file(build_run.run_dir / adapter)
        for budget, config in configs:
            if config.digest() not in variant["rows"]:
                metrics = {s: r2(split_metrics(run, coa_logits(run, config, s), s)) for s in SPLITS}
                variant["rows"][config.digest()] = {"budget": budget, **metrics}
                print(name, budget, {s: metrics[s]["accuracy"] for s in SPLITS}, flush=True)
                save()
        variant["summary"] = {
            s: summary(variant["rows"], {"ptq": {k: v[s]["accuracy"] for k, v in result["ptq"].items()}}
                       | ({"per_config": per_config} if s == "test" else {}), s)
            for s in SPLITS
        }  # fmt: skip
        print(name, json.dumps(variant["summary"], indent=1), flush=True)
        save()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
