"""One real end-to-end build on a tiny model: profiles -> train -> search -> export -> validate -> packages.

The acceptance checks of the build that do not need the real model run here on a tiny one: every package
is complete and hash-verified, its manifest's accuracy is reproduced by plain onnxruntime outside edgeq's
code, `edgeq validate` re-checks it, and tampering is caught.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import LAYER_BITS, profiles_for_model, run_readme_snippet
from tiny import tiny_model_dir, write_tiny_corpus
from transformers import AutoConfig, AutoTokenizer

from toolchain.build.device import BuildResult
from toolchain.build.manifest import load_manifest
from toolchain.build.report import device_report
from toolchain.cli import main
from toolchain.console import print_results
from toolchain.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_VALIDATION_FAILED
from toolchain.models import load_model, quantizable_layers
from toolchain.profiles import load_profile
from toolchain.whole_model import OutsideParams, outside_cost

STEPS = "40"


def _build_args(profiles: Path, model: Path, data: Path, out: Path) -> list[str]:
    return [
        "build",
        "--profiles",
        str(profiles),
        "--model",
        str(model),
        "--data",
        str(data),
        "--out",
        str(out),
        "--steps",
        STEPS,
    ]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """Hidden 128: with 32-wide layers a per-channel fp32 scale alone costs 1 bit per weight, which no
    2.5-bit profile could afford."""
    return tiny_model_dir(tmp_path_factory.mktemp("model"), hidden=128, max_positions=128)


@pytest.fixture(scope="module")
def build_profiles(tmp_path_factory, model_path) -> Path:
    """The shipped profiles, budgets rescaled for the tiny model (conftest.profiles_for_model), with
    aggressive_2bit's layers given 2.9 bits: on 128-wide layers a rank-1 branch's row scales alone cost 0.33
    bits per weight, so at 2.5 no branch fits beside any base and the build would train no branch run."""
    return profiles_for_model(
        model_path, tmp_path_factory.mktemp("profiles"), layer_bits=LAYER_BITS | {"aggressive_2bit": 2.9}
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory, model_path, build_profiles) -> tuple[Path, Path, int]:
    root = tmp_path_factory.mktemp("build")
    data = write_tiny_corpus(root / "data")
    out = root / "dist"
    code = main(_build_args(build_profiles, model_path, data, out))
    return out, data, code


def _profiles(build_profiles: Path) -> list[str]:
    return sorted(p.stem for p in build_profiles.glob("*.yaml"))


def test_build_writes_one_verified_package_per_profile(built, build_profiles):
    out, _, code = built
    summary = json.loads((out / "summary.json").read_text())
    statuses = {d["profile"]["name"]: d["status"] for d in summary["devices"]}
    assert sorted(statuses) == _profiles(build_profiles)
    # the 4-bit and 8-bit devices have room to spare on the tiny model: they must pass, and so the build
    assert statuses["rpi5"] == statuses["x86_vnni_server"] == statuses["npu_int8"] == "passed", statuses
    assert code == (EXIT_OK if all(s == "passed" for s in statuses.values()) else EXIT_VALIDATION_FAILED)
    for name in statuses:
        pkg = out / name
        for f in ("model.onnx", "manifest.json", "manifest.json.sha256", "report.html", "tokenizer.json"):
            assert (pkg / f).is_file(), f"{pkg / f} missing"
    assert (out / "index.html").is_file() and (out / "search.png").is_file()
    assert not list(out.rglob(".*.partial")), "a staging directory was left behind"
    record = json.loads((out / "build.json").read_text())
    stages = record["stages"]
    assert set(stages["export_validate_wall_s"]) == set(statuses)
    assert {"float_finetune", "float_logits", "quantized_base", "adapter"} <= set(stages["training"]["run_stages"])
    parts = stages["training"]["wall_s"] + stages["search_wall_s"] + sum(stages["export_validate_wall_s"].values())
    assert 0 < parts <= record["wall_s"]
    peaks = stages["peak_rss_mb"]
    assert set(peaks) == {"training", "search", "branch"} | {f"export_validate/{n}" for n in statuses}
    assert all(100 < mb < 20_000 for mb in peaks.values())  # a torch process, in megabytes
    assert stages["peak_rss_scope"] == "stage"  # Linux: each stage's own peak


def test_branch_profile_ships_the_better_of_merged_and_branch(built, build_profiles, model_path):
    """aggressive_2bit allows an int8 adapter branch: the build trains a branch run (sharing the float
    fine-tune), scores the branch at each rank that fits, and ships whichever scored better on validation."""
    from search_constraints import check_constraints

    from toolchain.build.branch import BRANCH, MERGED

    out = built[0]
    stages = json.loads((out / "build.json").read_text())["stages"]
    assert "adapter" in stages["branch_training"]["run_stages"]
    assert "float_finetune" not in stages["branch_training"]["run_stages"]  # shared with the merged run
    (branch_run,) = [d for d in (out / ".edgeq").glob("run-*-branch-*") if d.is_dir()]
    assert json.loads((branch_run / "settings.json").read_text())["steps"] == int(STEPS) // 2
    m = load_manifest(out / "aggressive_2bit")
    val = m.variant["validation"]
    assert set(val["ranks_tried"]) == {"8", "4", "2", "1"}
    assert val["ranks_tried"]["8"] is None and val["ranks_tried"]["1"] is not None  # 2.9 bits: rank 8 does not fit
    fitted = [v for v in val["ranks_tried"].values() if v is not None]
    assert (val["branch"] is None) == (not fitted)
    branch_better = bool(fitted) and val["branch"]["accuracy"] > val["merged"]["accuracy"]
    assert m.variant["weights"] == (BRANCH if branch_better else MERGED)
    assert m.bit_config.branch_rank == (val["branch_rank"] if branch_better else None)
    profile = load_profile(build_profiles / "aggressive_2bit.yaml")
    model = load_model(model_path, m.label_names)[0]
    outside = outside_cost(OutsideParams.of_model(model, quantizable_layers(model)), profile)
    assert check_constraints(profile, m.bit_config, outside=outside) == []
    graph = onnx.load(str(out / "aggressive_2bit" / "model.onnx"), load_external_data=False).graph
    head = {"classifier.qweight", "bert.pooler.dense.qweight"}  # the int8 head
    int8 = [i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT8 and i.name not in head]
    assert len(int8) == len(m.bit_config.branch_layers())  # the branch's factors are in the graph, or none
    assert "validation" not in load_manifest(out / "rpi5").variant  # rpi5 allows no branch: merged, no choice


def test_packages_store_the_tables_trained_with_the_adapter(built, build_profiles):
    """Each package's embedding tables are its run's trained ones in its profile's format (frozen integers,
    learned fp16 scales), not quantized again at export; the report says so."""
    from onnx import numpy_helper

    from toolchain.adapter import Run
    from toolchain.build.branch import BRANCH
    from toolchain.quant.tables import quantize_table

    out = built[0]
    runs = {"-branch-" in d.name: Run.load(d) for d in (out / ".edgeq").glob("run-*") if d.is_dir()}
    moved = False
    for name in _profiles(build_profiles):
        m = load_manifest(out / name)
        spec = load_profile(build_profiles / f"{name}.yaml").embeddings
        assert m.variant["tables"] == "trained"
        assert "scales trained with the adapter" in (out / name / "report.html").read_text()
        run = runs[m.variant["weights"] == BRANCH]
        trained = run.tables(spec)["bert.embeddings.word_embeddings"]
        inits = onnx.load(str(out / name / "model.onnx"), load_external_data=False).graph.initializer
        (stored,) = [i for i in inits if i.name == "bert.embeddings.word_embeddings.scale"]
        scale = numpy_helper.to_array(stored).astype(np.float32).reshape(trained.scale.shape)
        assert np.array_equal(scale, trained.scale.numpy())
        ptq = quantize_table(run.float_model().bert.embeddings.word_embeddings.weight, spec)
        moved |= not np.array_equal(scale, ptq.scale.numpy())
    assert moved  # training changed the tables' scales


def test_terminal_table_shows_every_devices_numbers(built, capsys):
    out = built[0]
    packages = sorted(p for p in out.iterdir() if (p / "manifest.json").is_file())
    print_results([BuildResult(p.name, p, load_manifest(p)) for p in packages])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("│")]
    assert len(rows) == len(packages)
    assert all("n/a" not in row and "100.0" in row for row in rows)  # exact-mode top-1 agreement with torch


def _ort_accuracy(pkg: Path, data: Path) -> float:
    """The manifest's accuracy recomputed with onnxruntime + the packaged tokenizer, no edgeq code."""
    manifest = json.loads((pkg / "manifest.json").read_text())
    tok = AutoTokenizer.from_pretrained(pkg, local_files_only=True)
    sess = ort.InferenceSession(str(pkg / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    texts = [(data / i).read_text(encoding="utf-8") for i in manifest["test_ids"]]
    labels = [manifest["label_names"].index(i.split("/")[0]) for i in manifest["test_ids"]]
    enc = tok(texts, padding=True, truncation=True, max_length=manifest["tokenizer"]["max_length"], return_tensors="np")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(pkg / "model.onnx"), so, providers=["CPUExecutionProvider"])
    logits = sess.run(None, {n: enc[n].astype(np.int64) for n in names})[0]
    return 100.0 * float((logits.argmax(-1) == np.array(labels)).mean())


def test_report_shows_both_modes_on_every_test_text(built):
    m = load_manifest(built[0] / "rpi5")
    acc = m.accuracy
    assert set(acc) == {"onnx", "onnx_default_optimizations", "float_reference", "drop", "n_samples"}
    assert acc["drop"] == pytest.approx(acc["float_reference"] - min(acc["onnx"], acc["onnx_default_optimizations"]))
    page = device_report(m, None)
    assert f"{acc['onnx_default_optimizations']:.2f} %" in page and "test, default optimizations" in page


def test_manifest_accuracy_reproduced_outside_edgeq(built, build_profiles):
    out, data, _ = built
    for name in _profiles(build_profiles):
        manifest = json.loads((out / name / "manifest.json").read_text())
        assert _ort_accuracy(out / name, data) == pytest.approx(manifest["accuracy"]["onnx"], abs=1e-6)


def test_readme_snippet_runs_a_package_with_the_manifests_accuracy(built, capsys):
    """The snippet (onnxruntime + tokenizers, nothing of edgeq) on every test text gives the accuracy the
    manifest reports for onnxruntime's default optimizations, and names labels from config.json."""
    out, data, _ = built
    pkg = out / "rpi5"
    manifest = json.loads((pkg / "manifest.json").read_text())
    texts = [(data / i).read_text(encoding="utf-8") for i in manifest["test_ids"]]
    scope = run_readme_snippet(pkg, texts)
    labels = np.array([manifest["label_names"].index(i.split("/")[0]) for i in manifest["test_ids"]])
    accuracy = 100.0 * float((scope["logits"].argmax(-1) == labels).mean())
    assert accuracy == pytest.approx(manifest["accuracy"]["onnx_default_optimizations"], abs=1e-6)
    printed = capsys.readouterr().out
    assert printed.strip() == str([manifest["label_names"][k] for k in scope["logits"].argmax(-1)])


def test_packages_hold_a_config_with_labels_in_logit_order(built, build_profiles):
    out, _, _ = built
    for name in _profiles(build_profiles):
        pkg = out / name
        manifest = json.loads((pkg / "manifest.json").read_text())
        config = AutoConfig.from_pretrained(pkg, local_files_only=True)
        assert config.id2label == dict(enumerate(manifest["label_names"]))
        assert config.label2id == {n: i for i, n in enumerate(manifest["label_names"])}
        assert "config.json" in manifest["files"]
        tokenizer = json.loads((pkg / "tokenizer.json").read_text())
        assert tokenizer["truncation"]["max_length"] == manifest["tokenizer"]["max_length"]
        assert tokenizer["padding"]["strategy"] == "BatchLongest"


def test_validate_rechecks_a_package_and_catches_tampering(built, tmp_path):
    out, data, _ = built
    pkg = tmp_path / "pkg"
    shutil.copytree(out / "rpi5", pkg)
    expected = EXIT_OK if json.loads((pkg / "manifest.json").read_text())["status"] == "passed" else 3
    assert main(["validate", str(pkg), "--data", str(data), "--no-latency"]) == expected
    with open(pkg / "model.onnx", "r+b") as f:  # truncate the model by one byte
        f.truncate(f.seek(0, 2) - 1)
    assert main(["validate", str(pkg), "--data", str(data), "--no-latency"]) == EXIT_VALIDATION_FAILED


def test_rebuild_reuses_the_cached_run_and_gives_identical_models(built, model_path, build_profiles):
    """Same models and the same search.json, byte for byte (the search's time is in build.json only)."""
    out, data, _ = built
    reproducible = ["search.json", *(str(p.relative_to(out)) for p in out.glob("*/model.onnx"))]
    before = {name: (out / name).read_bytes() for name in reproducible}
    runs = list((out / ".edgeq").glob("run-*/"))
    main(_build_args(build_profiles, model_path, data, out))
    assert list((out / ".edgeq").glob("run-*/")) == runs  # no second training run
    assert {name: (out / name).read_bytes() for name in reproducible} == before


def test_a_changed_merge_trains_a_new_run(built, model_path, build_profiles, monkeypatch, tmp_path):
    """One line of the merge code changed (as an upgrade of edgeq would): the next build trains a new run
    instead of reusing the cached one, whose integers the old merge computed."""
    import toolchain.provenance as provenance

    out, data, _ = built
    again = tmp_path / "dist"
    shutil.copytree(out / ".edgeq", again / ".edgeq")  # the cached run, as the first build left it
    runs = {p.name for p in (again / ".edgeq").glob("run-*/")}
    read = provenance._source_bytes

    def changed(path: Path) -> bytes:
        text = read(path)
        return text + b"\nSTEP_FLOOR = 1e-9\n" if path.as_posix().endswith("toolchain/adapter/merge.py") else text

    monkeypatch.setattr(provenance, "_source_bytes", changed)
    assert main(_build_args(build_profiles, model_path, data, again)) in (EXIT_OK, EXIT_VALIDATION_FAILED)
    new = {p.name for p in (again / ".edgeq").glob("run-*/")} - runs
    assert new, "the build reused a run that older merge code trained"

    def code(run: str) -> str:
        return json.loads((again / ".edgeq" / run / "code.json").read_text())["code"]

    assert {code(r) for r in new}.isdisjoint(code(r) for r in runs)  # trained again, by the new code
    assert all((again / ".edgeq" / r / "adapter.safetensors").is_file() for r in new)


def test_bad_profile_exits_2_before_any_work(tmp_path, tiny_model_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nweights: {bits: [9]}\n")
    out = tmp_path / "dist"
    assert main(["build", "--profiles", str(bad), "--model", str(tiny_model_path), "--out", str(out)]) == EXIT_BAD_INPUT
    assert not out.exists()


def test_no_branch_run_when_no_rank_fits_any_budget(model_path, tmp_path):
    """aggressive_2bit with 2.5 bits for 128-wide layers: no branch fits beside any base, so the build
    trains no branch run, ships merged integers, and the manifest records that no rank fit."""
    from toolchain.build.branch import MERGED

    data = write_tiny_corpus(tmp_path / "data")
    out = tmp_path / "dist"
    profiles = profiles_for_model(model_path, tmp_path / "profiles", ["aggressive_2bit"])
    code = main(_build_args(profiles / "aggressive_2bit.yaml", model_path, data, out))
    assert code in (EXIT_OK, EXIT_VALIDATION_FAILED)
    assert "branch_training" not in json.loads((out / "build.json").read_text())["stages"]
    assert not list((out / ".edgeq").glob("run-*-branch-*"))
    m = load_manifest(out / "aggressive_2bit")
    assert m.variant["weights"] == MERGED and m.bit_config.branch_rank is None
    val = m.variant["validation"]
    assert val["branch"] is None and set(val["ranks_tried"]) == {"8", "4", "2", "1"}
    assert set(val["ranks_tried"].values()) == {None}
