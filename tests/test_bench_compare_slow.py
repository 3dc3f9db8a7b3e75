"""Smoke test of bench/compare.py on a tiny model: a tiny build, then every method of the comparison on it.

Slow (a tiny build, one per-configuration and one side-adapter training, about 20 ONNX models measured).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import profiles_for_model
from tiny import tiny_model_dir, write_tiny_corpus

from toolchain.cli import main as edgeq

BENCH = Path(__file__).resolve().parent.parent / "bench"
METHODS = {"edgeq", "ptq_rtn", "ptq_mse", "uniform_rtn", "naive_merge_rtn", "shared_lora"}


@pytest.fixture(scope="module")
def bench_modules():
    sys.path.insert(0, str(BENCH))  # bench scripts import their siblings by name
    try:
        import compare
        import compare_report

        yield compare, compare_report
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.slow
def test_compare_on_a_tiny_build(tmp_path, bench_modules):
    compare, compare_report = bench_modules
    model = tiny_model_dir(tmp_path / "model", hidden=128, max_positions=128)
    # the shipped budgets would leave no reachable configuration for a tiny model: rescale them for it
    profiles_dir = profiles_for_model(model, tmp_path / "profiles")
    data = write_tiny_corpus(tmp_path / "data")
    dist = tmp_path / "dist"
    args = ["build", "--profiles", str(profiles_dir), "--model", str(model), "--data", str(data)]
    code = edgeq([*args, "--out", str(dist), "--steps", "20"])
    statuses = {d["profile"]["name"]: d["status"] for d in json.loads((dist / "summary.json").read_text())["devices"]}
    assert statuses["rpi5"] == statuses["x86_vnni_server"] == "passed", statuses  # the easy devices must pass
    assert code == (0 if all(s == "passed" for s in statuses.values()) else 3)  # 3: a device failed its tolerance
    out = tmp_path / "compare.json"
    argv = ["--packages", str(dist), "--budgets", "4", "2.5", "--per-config", "1", "--peqa", "1", "--repeats", "2"]
    argv += ["--naive-run", str(tmp_path / "naive"), "--shared-lora", str(tmp_path / "shared")]
    argv += ["--work", str(tmp_path / "work"), "--out", str(out)]
    assert compare.main(argv) == 0

    result = json.loads(out.read_text())
    profiles = sorted(p.stem for p in profiles_dir.glob("*.yaml"))
    assert sorted(result["rows"]) == sorted(profiles + ["budget_4", "budget_2_5"])
    for name, row in result["rows"].items():
        assert row["methods"].keys() >= METHODS, name
        for method, m in row["methods"].items():
            assert "error" not in m, (name, method, m)
            assert 0 <= m["accuracy"] <= 100 and m["file_bytes"] > 0
            assert set(m["latency_ms"]) == {"1x32", "1x128", "8x128"}
    assert sum("per_config_lora" in r["methods"] for r in result["rows"].values()) >= 1
    assert sum("peqa_scales" in r["methods"] for r in result["rows"].values()) >= 1
    base = result["ort_baselines"]
    assert {"ort_dynamic_int8_per_channel", "ort_matmul_nbits4_b32", "ort_matmul_nbits4_b128"} <= base.keys()
    assert all("error" not in base[k] for k in ("ort_dynamic_int8_per_channel", "ort_matmul_nbits4_b32"))
    cost = result["cost"]["wall_s"]
    assert cost["edgeq_all_devices"] > 0 and cost["per_config_one"] > 0
    prov = result["provenance"]
    assert prov["machine"]["cpu_count"] and result["versions"]["onnxruntime"] and prov["chosen_on"] == "val"
    n = len(result["test_labels"])
    assert all(len(m["predictions"]) == n for r in result["rows"].values() for m in r["methods"].values())

    table = compare_report.compare_markdown(result, prov)
    assert "budget_2_5" in table and "per-config" in table.lower() and "Shared-LoRA" in table
    assert "McNemar" in table and "paired comparisons" in table
    png = compare_report.compare_plot(result, tmp_path / "compare.png")
    assert png.is_file() and png.stat().st_size > 0
