"""The build's adapter retrained with one or more settings changed, on held-out configurations.

This bench retrains the build's adapter once per variant (a name and TrainSettings overrides, plus
`source=spread` for the training set that is never refined): the same float stage, settings, seed and
configuration set as `edgeq build` (toolchain.build.training.training_source), with only the overrides
changed (`adapter_equals_run` records whether the adapter is byte-identical to the build's). It scores every
held-out configuration (random per-layer bit-widths at each budget, symmetric per-channel, drawn as in
bench/adapter_generalisation.py) on the validation and test splits, beside MSE-clipped PTQ, and compares
each variant with `--reference` (the first variant by default) paired by configuration: the mean accuracy
and KL difference over the held-out configurations, its 95 % t interval and the paired t-test's p.
Validation is the split to choose on; test reports. Each trained run's training-set hypervolume per
refinement round is recorded (each run's own reference point: comparable between rounds, not between runs).

    python bench/suite.py run adapter-variants --run DIST/.edgeq/run-KEY --work /tmp/edgeq-variants \
        --variant build --variant spread source=spread --variant rounds-3 refine_every=50 \
        --variant whole mapper_context=whole --variant shared mapper=false

- a variant equal to the run's settings and source (`build` above) scores the run's own adapter;
- `spread`: the build's starting configuration set, re-scored each round but never refined (the CoA-LoRA
  paper's frozen set);
- `rounds-3`: refinement every 50 of 200 steps (3 rounds) instead of 100 (1 round);
- `whole`: each layer's Q(c) also sees every layer's bits (MapperContext.WHOLE);
- `shared`: Q(c) = I (Shared-LoRA).

results/adapter_variants.json is the older record (no provenance; BBC News) that chose DeltaUnits.COARSE_STEP
and ConfigWeighting.MEAN on validation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from adapter_common import coa_logits, ptq_logits, r2, split_metrics, train_variant
from adapter_generalisation import add_draw_args, held_out, load_dataset_of
from record import provenance
from scipy.stats import ttest_rel
from spread_source import SpreadOnlySource

from toolchain.adapter import Run, TrainSettings, run_files
from toolchain.build.training import training_set_path, training_source
from toolchain.io import atomic_write_json, sha256_file
from toolchain.models import default_model_path
from toolchain.profiles import default_profiles_dir, load_profiles

RESULTS = Path(__file__).resolve().parent / "results"
SPLITS = ("val", "test")
SOURCES = {"pareto": None, "spread": SpreadOnlySource}  # `source=` of a variant: the build's set, or frozen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="the finished run of a default `edgeq build`")
    p.add_argument("--work", type=Path, required=True, help="where to train the variants")
    p.add_argument(
        "--variant", nargs="+", action="append", required=True, metavar=("NAME", "KEY=VALUE"),
        help="a variant's name, then the TrainSettings fields it overrides and optionally source=spread "
             "(repeat the option per variant)",
    )  # fmt: skip
    p.add_argument("--reference", default=None, help="the variant the others are paired with (default: the first)")
    add_draw_args(p)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="default: results/adapter_variants_DATA.json")
    args = p.parse_args(argv)
    names = [v[0] for v in args.variant]
    if len(set(names)) != len(names):
        p.error(f"--variant: a name given twice in {names}")
    args.reference = args.reference or names[0]
    if args.reference not in names:
        p.error(f"--reference {args.reference!r} is not one of the variants {names}")
    return args


def overrides(args: list[str]) -> tuple[dict[str, str], str]:
    """({field: value} from KEY=VALUE arguments (TrainSettings validates the values), the source name)."""
    bad = [a for a in args if "=" not in a]
    if bad:
        raise SystemExit(f"--variant: {bad[0]!r} is not KEY=VALUE")
    changes = dict(a.split("=", 1) for a in args)
    source = changes.pop("source", "pareto")
    if source not in SOURCES:
        raise SystemExit(f"--variant: source={source!r}: allowed are {', '.join(SOURCES)}")
    return changes, source


def variant_settings(build_run: Run, changes: dict[str, str]) -> TrainSettings:
    """The build's settings with `changes` applied and validated."""
    unknown = sorted(changes.keys() - TrainSettings.model_fields.keys())
    if unknown:
        raise SystemExit(f"--variant: {unknown[0]!r} is not a TrainSettings field")
    return TrainSettings.model_validate(build_run.settings.model_dump() | changes)


def train_settings(build_run: Run, settings: TrainSettings, source: str, work: Path) -> tuple[Run, float, list]:
    """(run, wall seconds, training-set history) of the build's adapter retrained under `settings` (its float
    stage shared), on the configuration set `edgeq build` trains on over the default profiles (`source`
    "spread": the same set, never refined)."""
    profiles = load_profiles(sorted(default_profiles_dir().glob("*.yaml")))
    ds = load_dataset_of(build_run)
    config_source = training_source(
        profiles, default_model_path(), ds.label_names, seed=settings.seed, source_cls=SOURCES[source]
    )
    run, seconds = train_variant(
        default_model_path(), ds, build_run.run_dir, work / f"variant-{settings.digest()}-{source}",
        settings, config_source=config_source, progress=True,
    )  # fmt: skip
    return run, seconds, config_source.history


def hypervolumes(history: list[dict]) -> list[dict]:
    return [{"step": h["step"], "set_hypervolume": round(h["set_hypervolume"], 4)} for h in history]


def paired(a: list[float], b: list[float]) -> dict:
    """Mean of a - b over paired held-out configurations, its 95 % t interval and the paired t-test's p."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean = statistics.mean(diffs)
    if len(diffs) < 2 or all(d == diffs[0] for d in diffs):  # no spread: the t-test is undefined
        p = 1.0 if mean == 0 else None
        return {"mean": round(mean, 4), "ci95": [round(mean, 4)] * 2, "p": p, "n": len(diffs), "significant": False}
    test = ttest_rel(a, b)
    ci = test.confidence_interval(0.95)
    return {
        "mean": round(mean, 4),
        "ci95": [round(float(ci.low), 4), round(float(ci.high), 4)],
        "p": round(float(test.pvalue), 5),
        "n": len(diffs),
        "significant": bool(test.pvalue < 0.05),
    }


def versus(rows: dict, reference: dict, split: str) -> dict:
    """`rows` against `reference`'s rows, paired by configuration: accuracy (points) and KL, overall."""
    keys = sorted(rows.keys() & reference.keys())
    return {
        m: paired([rows[k][split][m] for k in keys], [reference[k][split][m] for k in keys]) for m in ("accuracy", "kl")
    }


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
    data = load_dataset_of(build_run).source
    out_path = args.out or RESULTS / f"adapter_variants_{data}.json"
    configs = held_out(build_run, args.budgets, args.n, args.seed)
    old = json.loads(out_path.read_text()) if out_path.is_file() else {}
    draw = {"budgets": args.budgets, "n": args.n, "seed": args.seed}
    result = old if (old.get("run"), old.get("draw")) == (str(args.run), draw) else {}
    result = result or {"run": str(args.run), "draw": draw, "ptq": {}, "variants": {}}

    def save() -> None:
        record = provenance(
            __file__, data=data, seeds=[build_run.settings.seed, args.seed], chosen_on="val", reported_on="test",
            threads=args.threads,
        )  # fmt: skip
        atomic_write_json(out_path, result | {"reference": args.reference, "provenance": record})

    for _, config in configs:
        if config.digest() not in result["ptq"]:
            result["ptq"][config.digest()] = {
                s: r2(split_metrics(build_run, ptq_logits(build_run, config, s), s)) for s in SPLITS
            }
            save()
    for name, *pairs in args.variant:
        changes, source = overrides(pairs)
        settings = variant_settings(build_run, changes)
        variant = result["variants"].get(name)
        if variant is not None and (variant["settings_digest"], variant.get("source")) != (settings.digest(), source):
            raise SystemExit(f"--variant {name}: {out_path} holds it under other settings; name it differently")
        if variant is None:
            if settings.digest() == build_run.settings.digest() and source == "pareto":
                # the build's own settings and set: its adapter, not retrained
                run, seconds = build_run, None
                path = training_set_path(run.run_dir)
                history = json.loads(path.read_text()) if path.is_file() else []
            else:
                run, seconds, history = train_settings(build_run, settings, source, args.work)
                seconds = round(seconds, 1)
            variant = result["variants"][name] = {
                "run": str(run.run_dir),
                "settings_digest": run.settings.digest(),
                "source": source,
                "train_seconds": seconds,
                "hypervolume_per_round": hypervolumes(history),
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
            s: summary(variant["rows"], {"ptq": {k: v[s]["accuracy"] for k, v in result["ptq"].items()}}, s)
            for s in SPLITS
        }
        save()
    reference = result["variants"][args.reference]["rows"]
    for name, variant in result["variants"].items():
        if name != args.reference:
            variant["vs_reference"] = {s: versus(variant["rows"], reference, s) for s in SPLITS}
            print(name, "vs", args.reference, json.dumps(variant["vs_reference"]), flush=True)
    save()
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
