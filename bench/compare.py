"""edgeq against what a user would pick instead, measured side by side in onnxruntime (issue 7).

Targets: every shipped profile (its edgeq package from `--packages`, built by `edgeq build`) and average
budgets `--budgets` (logical bits per weight; the run's own search picks each configuration, symmetric
per-channel, bits 2..8, INT2/INT4/INT8 containers at opset 25, int8 embedding table). For each target, on
the run's test split, in onnxruntime with default optimizations:

    edgeq            the package (profiles) / the run's merged integers exported the same way (budgets)
    ptq_rtn          the same configuration, absmax round-to-nearest of the float fine-tune (no adapter)
    ptq_mse          the same, MSE-clipped (the run's quantized base)
    uniform_rtn      absmax RTN at the uniform bit-width nearest the configuration's average bits
    naive_merge_rtn  a float side adapter (`--naive-run`, forward=branch) merged, then rounded again
    per_config_lora  (`--per-config K`, lowest-bit targets first) LoRA trained on that configuration only,
                     same settings and steps, merged the same way
    peqa_scales      (`--peqa K`, lowest-bit targets first) PEQA on that configuration only: the MSE-clipped
                     integers frozen, only the per-channel scales trained (lr=0, no rounding residual)
    shared_lora      (`--shared-lora DIR`) the same adapter trained the same way without the configuration
                     mapper, Q(c) = I for every configuration (the CoA-LoRA paper's Shared-LoRA baseline)

and once, on the float fine-tune's ONNX graph: onnxruntime quantize_dynamic (int8 per-channel) and
MatMulNBitsQuantizer 4-bit (blocks 32 and 128, and HQQ block 128). Cost: the run's recorded stage timings
and search time against the per-configuration runs' measured training time.

    python bench/compare.py --packages dist [--run dist/.edgeq/run-KEY] [--per-config 1] [--peqa 1] \\
        [--naive-run /tmp/edgeq-compare/naive] [--shared-lora /tmp/edgeq-compare/shared] [--budgets 4 3 2.5 2.25] \\
        [--no-profiles] [--no-latency] [--out bench/results/compare_<data>.json]

Every measurement keeps each test document's predicted class, so that the README's tables
(`bench/readme_assets.py --compare`) give each accuracy its 95 % interval and each method McNemar's exact
test against edgeq. The configurations are chosen by the run's search on validation; every number here is
on test.

A second invocation with the same run and packages resumes (measured entries are kept) when the code that
measured them is the checkout's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from adapter_common import find_run, train_variant
from compare_ort import EvalSet, float_onnx, measure, ort_baselines
from record import code_hash, provenance
from stats import encode_predictions

from toolchain.adapter import FixedConfigSource, ForwardMode, Run, TrainSettings, run_files
from toolchain.bitconfig import BitConfig, config_from_bits
from toolchain.build.device import CALIBRATION_TEXTS, calibration_texts
from toolchain.build.device_search import search_run
from toolchain.build.manifest import load_manifest
from toolchain.exporters import export_model
from toolchain.io import atomic_write_json
from toolchain.profiles import Budget, DeviceProfile, default_profiles_dir, load_profiles
from toolchain.quant.core import Scheme
from toolchain.quant.model import Rounding, apply_quantized, quantize_model

RESULTS = Path(__file__).resolve().parent / "results"
FLOAT_OPSET = 21
PACKAGES_VERSIONS = ("torch", "transformers", "onnx", "onnxruntime", "onnx-ir", "onnxslim")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--packages", type=Path, required=True, help="an `edgeq build --out` directory")
    p.add_argument("--run", type=Path, default=None, help="its trained run (default: the one in PACKAGES/.edgeq)")
    p.add_argument("--profiles", type=Path, nargs="+", default=None, help="profile files or dirs (default: shipped)")
    p.add_argument("--budgets", type=float, nargs="*", default=[4.0, 3.0, 2.5, 2.25])
    p.add_argument("--no-profiles", action="store_true", help="budgets only: skip the shipped profiles' packages")
    p.add_argument("--per-config", type=int, default=0, help="per-configuration LoRA fine-tunes to train")
    p.add_argument("--peqa", type=int, default=0, help="per-configuration PEQA (scales-only) tunings to train")
    p.add_argument("--naive-run", type=Path, default=None, help="a forward=branch run (trained there if absent)")
    p.add_argument("--shared-lora", type=Path, default=None, help="a mapper=False run (trained there if absent)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "edgeq-compare")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20, help="timed runs per latency median")
    p.add_argument("--no-latency", action="store_true", help="accuracy and size only")
    p.add_argument("--out", type=Path, default=None, help="default: bench/results/compare_<data>.json")
    return p.parse_args(argv)


def measured(model_path: Path, ev: EvalSet, args: argparse.Namespace) -> dict:
    return measure(model_path, ev, args.threads, args.repeats, latency=not args.no_latency)


def budget_profile(budget: float) -> DeviceProfile:
    """A synthetic device whose only limit is `budget` logical bits per weight."""
    return DeviceProfile.model_validate(
        {
            "name": f"budget_{budget:g}".replace(".", "_"),
            "description": f"average {budget:g} bits per weight, symmetric per-channel",
            "budget": {"max_avg_bits": budget},
            "weights": {"bits": [2, 3, 4, 5, 6, 7, 8], "containers": ["int2", "int4", "int8"]},
            "onnx": {"opset": 25, "min_onnxruntime": "1.24"},
            "embeddings": "int8",
            "accuracy": {"max_drop": 100.0},
        }
    )


def unbudgeted(profile: DeviceProfile) -> DeviceProfile:
    """The profile without its budget: baselines (uniform bit-widths) may land just above it."""
    return profile.model_copy(update={"budget": Budget(max_avg_bits=32.0)})


def nearest_uniform(run: Run, profile: DeviceProfile, config: BitConfig) -> BitConfig:
    """Symmetric per-channel, one bit-width the profile allows, average bits nearest `config`'s (ties: lower)."""
    candidates = [
        config_from_bits(run.specs, b, scheme=Scheme.SYMMETRIC, containers=profile.weights.container_for)
        for b in profile.weights.bits
        if profile.weights.container_for(b, Scheme.SYMMETRIC) is not None
    ]
    return min(candidates, key=lambda c: (abs(c.avg_bits - config.avg_bits), c.avg_bits))


def targets(run: Run, args: argparse.Namespace, result: dict) -> list[dict]:
    """Profiles (configuration from their package) and budgets (configuration from the run's search)."""
    out = []
    for p in [] if args.no_profiles else load_profiles(args.profiles or [default_profiles_dir()]):
        pkg = args.packages / p.name
        if not (pkg / "manifest.json").is_file():
            print(f"{pkg}: no package, skipped", flush=True)
            continue
        out.append({"name": p.name, "kind": "profile", "profile": p, "config": load_manifest(pkg).bit_config})
    budgets = [budget_profile(b) for b in args.budgets]
    stored = result.setdefault("budget_configs", {})
    missing = [p for p in budgets if p.name not in stored]
    if missing:
        found = search_run(run, missing, seed=run.settings.seed, progress=False)
        result.setdefault("budget_search_s", {})[" ".join(p.name for p in missing)] = round(found.seconds, 1)
        for p in missing:
            stored[p.name] = found.selection(p.name).config.model_dump(mode="json")
    for p, b in zip(budgets, args.budgets):
        out.append({"name": p.name, "kind": "budget", "budget": b, "profile": p, "config": BitConfig(**stored[p.name])})
    return out


def export_and_measure(model, target: dict, config: BitConfig, run: Run, ev: EvalSet, args, work: Path) -> dict:
    path = work / "model.onnx"
    try:
        export_model(
            model,
            run.tokenizer,
            unbudgeted(target["profile"]),
            config,
            path,
            calibration_texts=calibration_texts(run.splits.train, CALIBRATION_TEXTS),
            max_length=run.settings.max_length,
            float_path=work / "float.onnx",
        )
        return measured(path, ev, args) | bits_of(config)
    finally:
        for f in work.glob("*.onnx*"):
            f.unlink()


def bits_of(config: BitConfig) -> dict:
    return {
        "avg_bits": round(config.avg_bits, 4),
        "container_bits": round(config.container_bits_per_weight, 4),
        "container_bytes": config.container_bytes,
    }


def method_models(run: Run, variants: dict[str, Run], singles: dict[str, dict[str, Run]], target: dict) -> dict:
    """Method -> (thunk building its torch model, its configuration); edgeq's profile rows use the package."""
    config, table = target["config"], target["profile"].embeddings  # adapter runs ship their trained tables
    uniform = nearest_uniform(run, target["profile"], config)
    out = {
        "ptq_rtn": (lambda: quantize_model(run.float_model(), config, Rounding.RTN), config),
        "ptq_mse": (lambda: apply_quantized(run.float_model(), run.ptq_weights(config)), config),
        "uniform_rtn": (lambda: quantize_model(run.float_model(), uniform, Rounding.RTN), uniform),
    }
    if target["kind"] == "budget":
        out = {"edgeq": (lambda: run.quantized_model(config, table=table), config)} | out
    for method, other in variants.items():  # whole-run variants: every configuration from one run
        out[method] = (lambda other=other: other.quantized_model(config, table=table), config)
    for method, runs in singles.items():
        if config.digest() in runs:
            out[method] = (lambda runs=runs: runs[config.digest()].quantized_model(config, table=table), config)
    return out


def measure_target(run, variants, singles, target: dict, row: dict, ev: EvalSet, args, work: Path, save) -> dict:
    config = target["config"]
    row.update(name=target["name"], kind=target["kind"], budget=target.get("budget"), **bits_of(config))
    methods = row.setdefault("methods", {})
    if target["kind"] == "profile" and "edgeq" not in methods:
        manifest = load_manifest(args.packages / target["name"])
        methods["edgeq"] = measured(args.packages / target["name"] / "model.onnx", ev, args)
        methods["edgeq"] |= bits_of(config) | {"status": manifest.status, "manifest_accuracy": manifest.accuracy}
        print(target["name"], "edgeq", short(methods["edgeq"]), flush=True)
        save()
    for name, (build, cfg) in method_models(run, variants, singles, target).items():
        if name in methods and "error" not in methods[name]:
            continue
        try:
            methods[name] = export_and_measure(build(), target, cfg, run, ev, args, work)
            if name == "uniform_rtn":
                methods[name]["uniform_bits"] = cfg.bits_vector()[0]
        except Exception as exc:  # one failing baseline is recorded, the others still run
            methods[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(target["name"], name, short(methods[name]), flush=True)
        save()
    return row


def short(m: dict) -> dict:
    keys = ("accuracy", "agreement", "kl", "file_bytes", "latency_ms", "error")
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in m.items() if k in keys}


# Per-configuration baselines: settings changed from the run's; each trains on one configuration only.
SINGLE_METHODS = {
    "per_config_lora": {},
    "peqa_scales": {"lr": 0.0, "residual": False},  # A, B, mapper and head frozen: only the scales learn
}


def train_singles(
    run: Run, target_list: list[dict], k: int, work: Path, method: str = "per_config_lora"
) -> tuple[dict[str, Run], list[dict]]:
    """`method` runs for the k lowest-bit distinct configurations (reused when finished)."""
    ds = run_files.read_dataset(run.run_dir / run_files.DATA)
    settings = TrainSettings.model_validate(run.settings.model_dump() | SINGLE_METHODS[method])
    prefix = "per-config" if method == "per_config_lora" else method
    seen, singles, costs = set(), {}, []
    for t in sorted(target_list, key=lambda t: t["config"].avg_bits):
        digest = t["config"].digest()
        if len(singles) >= k or digest in seen:
            continue
        seen.add(digest)
        own = settings.model_copy(update={"tables": [t["profile"].embeddings]})  # its one device's tables
        single, seconds = train_variant(
            run.run_dir / run_files.FLOAT_DIR, ds, run.run_dir, work / f"{prefix}-{digest}", own,
            config_source=FixedConfigSource([t["config"]]), progress=True,
        )  # fmt: skip
        singles[digest] = single
        costs.append({"target": t["name"], "this_call_s": round(seconds, 1), **stage_cost(single, "adapter")})
    return singles, costs


# Whole-run variants: settings changed from the run's, trained on the run's float stage with the same
# configuration source (the shipped profiles' Pareto refinement) and steps.
VARIANT_METHODS = {
    "naive_merge_rtn": {"forward": ForwardMode.BRANCH},  # float side adapter, merged then rounded
    "shared_lora": {"mapper": False},  # Q(c) = I: one adapter for every configuration
}


def variant_run(run: Run, method: str, path: Path | None, profiles: list[DeviceProfile]) -> tuple[Run | None, dict]:
    """`method`'s run: loaded, or trained at `path` from the run's float stage, with the build's source."""
    if path is None:
        return None, {}
    if not Run.is_complete(path):
        from toolchain.build.training import training_source

        settings = TrainSettings.model_validate(run.settings.model_dump() | VARIANT_METHODS[method])
        ds = run_files.read_dataset(run.run_dir / run_files.DATA)
        float_dir, source = run.run_dir / run_files.FLOAT_DIR, None
        if profiles:  # as the build's training stage makes it
            source = training_source(profiles, float_dir, ds.label_names, seed=run.settings.seed)
        train_variant(float_dir, ds, run.run_dir, path, settings, config_source=source)
    other = Run.load(path)
    return other, {"dir": str(path), "settings": other.settings.model_dump(mode="json"), **stage_cost(other, "adapter")}


def stage_cost(run: Run, stage: str) -> dict:
    t = run.info["timings_s"].get(stage, {})
    return {f"{stage}_wall_s": t.get("wall_s"), f"{stage}_cpu_s": t.get("cpu_s")}


def cost_summary(run: Run, packages: Path, n_devices: int, singles: list[dict]) -> dict:
    """edgeq's training + search for all devices vs one and n_devices per-configuration fine-tunes.

    Both sides share the float stages (fine-tune, teacher logits, quantized base); packaging (export and
    validation) costs the same per device either way and is left out."""
    t = run.info["timings_s"]
    out: dict = {"run_stages": t}
    search = json.loads((packages / "search.json").read_text()) if (packages / "search.json").is_file() else {}
    build = json.loads((packages / "build.json").read_text()) if (packages / "build.json").is_file() else {}
    search_s = build.get("stages", {}).get("search_wall_s", search.get("seconds"))  # older search.json: its own
    out.update(search_s=search_s, build_wall_s=build.get("wall_s"), per_config_runs=singles)
    for kind in ("wall_s", "cpu_s"):
        shared = sum(t[s][kind] for s in ("float_finetune", "float_logits", "quantized_base") if s in t)
        edgeq = shared + t["adapter"][kind] + ((search_s or 0.0) if kind == "wall_s" else 0.0)
        per = [s[f"adapter_{kind}"] for s in singles if s.get(f"adapter_{kind}") is not None]
        out[kind] = {"shared_float_stages": round(shared, 1), "edgeq_all_devices": round(edgeq, 1)}
        if per:
            one = shared + sum(per) / len(per)
            out[kind] |= {
                "per_config_one": round(one, 1),
                "per_config_all_devices": round(shared + n_devices * sum(per) / len(per), 1),
                "edgeq_over_one_per_config": round(edgeq / one, 3),
            }
    out["note"] = "cpu_s excludes the search (not timed in CPU seconds); wall_s includes it"
    return out


def versions() -> dict:
    out = {}
    for name in PACKAGES_VERSIONS:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def earlier(args: argparse.Namespace) -> dict:
    if not args.out.is_file():
        return {}
    old = json.loads(args.out.read_text())
    same_code = old.get("provenance", {}).get("code_hash") == code_hash(Path(__file__))
    return old if same_code and (old.get("run"), old.get("packages")) == (str(args.run), str(args.packages)) else {}


def reference_rows(run: Run, ev: EvalSet, args, result: dict, work: Path, save) -> None:
    """The float ONNX graph and onnxruntime's own quantizers of it."""
    ref = result.setdefault("reference", {"float_torch": run.info["float_test"]})
    base = result.setdefault("ort_baselines", {})
    if "float_onnx" in ref and all("accuracy" in base.get(k, {}) for k in ort_baselines(Path(), work)):
        return
    fp = work / "ref" / "float.onnx"
    fp.parent.mkdir(parents=True, exist_ok=True)
    float_onnx(run.float_model(), run.tokenizer, fp, FLOAT_OPSET)
    if "float_onnx" not in ref:
        ref["float_onnx"] = measured(fp, ev, args)
    for name, make in ort_baselines(fp, work / "ref").items():
        if name in base and "error" not in base[name]:
            continue
        t0 = time.perf_counter()
        try:
            path = make()
            seconds = round(time.perf_counter() - t0, 1)
            base[name] = measured(path, ev, args) | {"quantize_s": seconds}
        except Exception as exc:  # e.g. HQQ missing from this onnxruntime: recorded, not fatal
            base[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(name, short(base[name]), flush=True)
        save()
    shutil.rmtree(work / "ref")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.run = args.run or find_run(args.packages, "; pass --run")
    run = Run.load(args.run)
    data = run_files.read_dataset(run.run_dir / run_files.DATA).source
    args.out = args.out or RESULTS / f"compare_{data}.json"
    result = earlier(args) or {"run": str(args.run), "packages": str(args.packages), "rows": {}}
    result |= {"budgets": args.budgets, "settings": run.settings.model_dump(mode="json"), "versions": versions()}

    def save() -> None:
        prov = provenance(__file__, data=data, seeds=[run.settings.seed], chosen_on="val", reported_on="test",
                          threads=args.threads)  # fmt: skip
        atomic_write_json(args.out, result | {"provenance": prov})

    test = run.splits.test
    result["test_labels"] = encode_predictions(test.labels)  # what the paired tests pair
    ev = EvalSet(run.tokenizer, test.texts, test.labels, run.float_logits("test"), run.settings.max_length)
    work = args.work / "models"
    work.mkdir(parents=True, exist_ok=True)
    target_list = targets(run, args, result)
    save()
    reference_rows(run, ev, args, result, work, save)
    lora, single_costs = train_singles(run, target_list, args.per_config, args.work)
    peqa, peqa_costs = train_singles(run, target_list, args.peqa, args.work, "peqa_scales")
    singles = {"per_config_lora": lora, "peqa_scales": peqa}
    shipped = load_profiles(args.profiles or [default_profiles_dir()])  # what the build's run trained for
    result["cost"] = cost_summary(run, args.packages, len(shipped), single_costs) | {"peqa_runs": peqa_costs}
    by_bits = sorted(target_list, key=lambda t: t["config"].avg_bits)  # low bits, where methods differ, first
    for t in by_bits:  # measured entries are skipped (a second invocation resumes)
        measure_target(run, {}, singles, t, result["rows"].setdefault(t["name"], {}), ev, args, work, save)
    variants = {}
    for method, path in (("naive_merge_rtn", args.naive_run), ("shared_lora", args.shared_lora)):
        other, result[f"{method}_run"] = variant_run(run, method, path, shipped)
        if other is not None:
            variants[method] = other
    for t in by_bits:
        measure_target(run, variants, singles, t, result["rows"][t["name"]], ev, args, work, save)
    save()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
