"""A model directory that already holds a trained classifier builds without a float fine-tune."""

from __future__ import annotations

import json

import pytest
from conftest import TinyBuild

from toolchain.cli import main
from toolchain.data import load_dataset, split
from toolchain.evaluate import metrics, predict_logits
from toolchain.models import load_checkpoint


def test_a_fine_tuned_directory_is_its_own_float_reference(tiny_build: TinyBuild, tmp_path, capsys):
    """The tiny build's float fine-tune (its run's float/ directory) given back as --model: the new build
    copies it instead of fine-tuning, and its float reference accuracy is that model's own."""
    (float_dir,) = (tiny_build.out / ".edgeq").glob("run-*/float")
    out = tmp_path / "dist"
    args = tiny_build.args(out)
    args[args.index("--model") + 1] = str(float_dir)
    assert main(args) == 0
    assert "holds a trained classifier" in capsys.readouterr().err
    (run_dir,) = (out / ".edgeq").glob("run-*/")
    info = json.loads((run_dir / "run.json").read_text())
    assert info["float_origin"] == {"fine_tuned_here": False, "fresh_params": []}
    assert "float_model_copied" in info["timings_s"] and "float_finetune" not in info["timings_s"]
    dataset = load_dataset(tiny_build.data)
    test = split(dataset, 0).test
    ckpt = load_checkpoint(float_dir, dataset.label_names)
    own = metrics(predict_logits(ckpt.model, ckpt.tokenizer, test.texts), test.labels)
    assert info["float_test"]["accuracy"] == pytest.approx(own.accuracy, abs=1e-9)
    manifest = json.loads((out / "rpi5" / "manifest.json").read_text())
    assert manifest["accuracy"]["float_reference"] == pytest.approx(own.accuracy, abs=1e-9)
