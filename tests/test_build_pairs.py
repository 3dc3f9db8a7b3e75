"""A sentence-pair dataset builds, validates and ships a package the README snippet runs on pairs."""

from __future__ import annotations

import json

import pytest
from conftest import TINY_BUILD_PROFILE, TINY_BUILD_STEPS, profiles_for_model, run_readme_snippet
from tiny import tiny_model_dir, write_tiny_pair_corpus

from toolchain.cli import main
from toolchain.data import load_dataset


def test_a_pair_dataset_builds_and_its_package_reads_pairs(tmp_path, capsys):
    model = tiny_model_dir(tmp_path / "model", max_positions=128)
    data = write_tiny_pair_corpus(tmp_path / "pairs.jsonl")
    profiles = profiles_for_model(model, tmp_path / "profiles", [TINY_BUILD_PROFILE], max_drop=10.0)
    out = tmp_path / "dist"
    args = ["build", "--profiles", str(profiles / f"{TINY_BUILD_PROFILE}.yaml"), "--model", str(model)]
    assert main([*args, "--data", str(data), "--out", str(out), "--steps", TINY_BUILD_STEPS]) == 0
    pkg = out / TINY_BUILD_PROFILE
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["tokenizer"]["pairs"] is True and "token_type_ids" in manifest["tokenizer"]["input_names"]
    # the label is the topic of text_pair: above 50 % only if text_pair is read (text alone is a distractor)
    assert manifest["accuracy"]["float_reference"] > 75.0
    dataset = load_dataset(data)
    by_id = {doc_id: i for i, doc_id in enumerate(dataset.ids)}
    pairs = [dataset.inputs[by_id[i]] for i in manifest["test_ids"]]
    scope = run_readme_snippet(pkg, pairs)
    labels = [dataset.labels[by_id[i]] for i in manifest["test_ids"]]
    accuracy = 100.0 * float((scope["logits"].argmax(-1) == labels).mean())
    assert accuracy == pytest.approx(manifest["accuracy"]["onnx_default_optimizations"], abs=1e-6)
    capsys.readouterr()
    assert main(["validate", str(pkg)]) == 0  # re-checked from the data file, pairs and all
