"""The whole build (profile -> package) on a tiny seeded model of each supported architecture, and the
refusal, before any training, of an architecture whose exported graph does not compute what torch does."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from conftest import profiles_for_model
from tiny import tiny_architecture_dir, write_tiny_corpus
from torch import nn

from toolchain.cli import main
from toolchain.data import load_dataset
from toolchain.models import load_checkpoint, quantizable_layers
from toolchain.task_head import head_parameter_names

WORKING = ["distilbert", "roberta", "electra", "modernbert", "llama", "qwen2"]
INTEGER = {onnx.TensorProto.INT4, onnx.TensorProto.INT8}


def _build(tmp_path, model_type: str, profile: str, **profile_overrides):
    """`edgeq build` (20 steps) of a tiny `model_type` model with one shipped profile, its budget rescaled;
    returns (exit code, model directory, data, out)."""
    model_dir = tiny_architecture_dir(tmp_path / "model", model_type)
    data = write_tiny_corpus(tmp_path / "data")
    profiles = profiles_for_model(model_dir, tmp_path / "profiles", [profile], **profile_overrides)
    out = tmp_path / "dist"
    args = ["build", "--profiles", str(profiles / f"{profile}.yaml"), "--model", str(model_dir), "--data", str(data)]
    return main([*args, "--out", str(out), "--steps", "20"]), model_dir, data, out


@pytest.mark.parametrize("model_type", WORKING)
def test_each_architecture_builds_trains_its_new_head_and_quantizes_every_linear(model_type, tmp_path):
    code, model_dir, data, out = _build(tmp_path, model_type, "rpi5", max_drop=10.0)
    assert code == 0
    labels = load_dataset(data).label_names
    fresh = load_checkpoint(model_dir, labels, seed=0)  # the head the float stage started from (seed 0)
    assert fresh.new_params and fresh.new_params <= set(head_parameter_names(fresh.model))
    (float_dir,) = (out / ".edgeq").glob("run-*/float")
    trained = dict(load_checkpoint(float_dir, labels).model.named_parameters())
    start = dict(fresh.model.named_parameters())
    unchanged = [n for n in fresh.new_params if torch.equal(start[n], trained[n])]
    assert not unchanged, f"newly initialised parameters that did not train: {unchanged}"
    manifest = json.loads((out / "rpi5" / "manifest.json").read_text())
    searched = {s.name for s in quantizable_layers(fresh.model)}
    assert set(manifest["bit_config"]["layers"]) == searched
    graph = onnx.load(str(out / "rpi5" / "model.onnx"))
    weights = [i for i in graph.graph.initializer if i.data_type in INTEGER and len(i.dims) == 2]
    linears = [n for n, m in fresh.model.named_modules() if isinstance(m, nn.Linear)]
    assert len(weights) == len(linears)  # searched layers and the int8 head: every Linear ships as integers


def test_an_architecture_whose_graph_computes_something_else_is_refused_before_training(tmp_path, capsys):
    """DeBERTa-v2's exported graph gives NaN logits in onnxruntime: refused (exit 2), nothing written."""
    code, model_dir, _, out = _build(tmp_path, "deberta-v2", "rpi5")
    assert code == 2
    err = capsys.readouterr().err
    assert f"{model_dir}: the exported float graph of this architecture (deberta-v2) does not compute" in err
    assert not out.exists()


def test_an_op_the_device_lacks_is_refused_before_training_naming_it(tmp_path, capsys):
    """RoBERTa's position ids need CumSum; npu_int8's op sets (an accelerator's short list) lack it."""
    code, _, _, out = _build(tmp_path, "roberta", "npu_int8")
    assert code == 2
    err = capsys.readouterr().err
    assert "npu_int8.yaml: onnx.op_sets: the roberta graph of" in err and "CumSum (node /model/roberta/" in err
    assert not out.exists()
