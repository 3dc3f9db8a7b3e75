"""The whole build (profile -> package) on a tiny seeded model of each supported architecture, and the
refusal, before any training, of an architecture whose exported graph does not compute what torch does."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from conftest import profiles_for_model
from tiny import DEBERTA_V3, tiny_architecture_dir, write_tiny_corpus
from torch import nn

from toolchain.cli import main
from toolchain.data import load_dataset
from toolchain.exporters import float_graph
from toolchain.models import load_checkpoint, quantizable_layers, table_modules
from toolchain.task_head import head_parameter_names
from toolchain.whole_model import OutsideParams

WORKING = ["distilbert", "roberta", "electra", "modernbert", "llama", "qwen2", "gpt2", "mpnet", "deberta-v2"]
INTEGER = {onnx.TensorProto.INT4, onnx.TensorProto.INT8}


def _build(tmp_path, model_type: str, profile: str, config: dict | None = None, **profile_overrides):
    """`edgeq build` (20 steps) of a tiny `model_type` model (`config` overriding its settings) with one
    shipped profile, its budget rescaled; returns (exit code, model directory, data, out)."""
    model_dir = tiny_architecture_dir(tmp_path / "model", model_type, **(config or {}))
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


def test_a_graph_that_computes_something_else_is_refused_before_training(tmp_path, capsys, monkeypatch):
    """DeBERTa-v2 multiplies its embeddings by the attention mask: exported with the prepared additive mask
    other architectures take, its graph gives NaN logits in onnxruntime. Refused (exit 2), nothing written."""
    monkeypatch.setattr(float_graph, "takes_additive_mask", lambda model, tokenizer: True)
    code, model_dir, _, out = _build(tmp_path, "deberta-v2", "rpi5")
    assert code == 2
    err = capsys.readouterr().err
    assert f"{model_dir}: the exported float graph of this architecture (deberta-v2) does not compute" in err
    assert "max abs logit difference nan" in err
    assert not out.exists()


def test_a_graph_that_folds_weights_into_float_constants_is_refused_before_training(tmp_path, capsys):
    """DeBERTa-v3's relative attention projects its position table by each layer's query and key weights;
    the exporter folds the products into float constants that no budget counts. Refused (exit 2)."""
    code, model_dir, _, out = _build(tmp_path, "deberta-v2", "rpi5", config=DEBERTA_V3)
    assert code == 2
    err = capsys.readouterr().err
    assert f"{model_dir}: the exported float graph of this architecture (deberta-v2) holds" in err
    assert "more float constants than the model has parameters" in err
    assert not out.exists()


def test_a_model_that_multiplies_by_its_mask_keeps_its_own_mask(tmp_path):
    deberta = load_checkpoint(tiny_architecture_dir(tmp_path / "d", "deberta-v2"), ["a", "b"], seed=0)
    bert = load_checkpoint(tiny_architecture_dir(tmp_path / "r", "roberta"), ["a", "b"], seed=0)
    assert not float_graph.takes_additive_mask(deberta.model, deberta.tokenizer)
    assert float_graph.takes_additive_mask(bert.model, bert.tokenizer)


def test_an_op_the_device_lacks_is_refused_before_training_naming_it(tmp_path, capsys):
    """RoBERTa's position ids need CumSum; npu_int8's op sets (an accelerator's short list) lack it."""
    code, _, _, out = _build(tmp_path, "roberta", "npu_int8")
    assert code == 2
    err = capsys.readouterr().err
    assert "npu_int8.yaml: onnx.op_sets: the roberta graph of" in err and "CumSum (node /model/roberta/" in err
    assert not out.exists()


def test_a_narrow_bias_table_stays_float_and_counts_at_its_size(tmp_path):
    """MPNet's relative_attention_bias (32 buckets x 2 heads) is no token table: fp32, counted as such."""
    model = load_checkpoint(tiny_architecture_dir(tmp_path, "mpnet"), ["a", "b"], seed=0).model
    bias = "mpnet.encoder.relative_attention_bias"
    assert bias not in table_modules(model)
    assert "mpnet.embeddings.word_embeddings" in table_modules(model)
    outside = OutsideParams.of_model(model, quantizable_layers(model))
    assert bias not in outside.tables
    assert outside.n_params == sum(p.numel() for p in model.parameters())
    narrow = model.get_submodule(bias).weight.numel()
    norms_and_biases = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 1)
    assert outside.float_params == norms_and_biases + narrow
