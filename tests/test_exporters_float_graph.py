"""The float graph: simple ops only, dynamic batch and sequence axes, opset conversion changing nothing."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import onnxslim
import pytest
import torch
from tiny import tiny_corpus, tiny_model_dir

from toolchain.evaluate import encode, predict_logits
from toolchain.exporters.float_graph import (
    EXPORT_MAX_OPSET,
    _torch_export,
    convert_opset,
    export_float_graph,
    model_input_names,
)
from toolchain.models import load_model
from toolchain.profiles import OP_SETS, OpSet

CORPUS = tiny_corpus()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(2)
    return load_model(tiny_model_dir(tmp_path_factory.mktemp("tiny")), CORPUS.label_names)


def _run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})[0]


@pytest.mark.parametrize("opset", [13, 21, 25])
def test_float_graph_matches_torch_at_any_batch_and_length(tiny, opset):
    model, tok = tiny
    graph = export_float_graph(model, tok, opset)
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in graph.graph.output] == ["logits"]
    assert {n.op_type for n in graph.graph.node} <= OP_SETS[OpSet.TRANSFORMER]  # no Gelu, And, Range, SDPA
    assert graph.opset_import[0].version == opset
    for texts in (CORPUS.texts[:7], CORPUS.texts[40:41]):
        enc = {k: v.numpy() for k, v in encode(tok, texts).items()}
        assert np.abs(_run(graph, enc) - predict_logits(model, tok, texts).numpy()).max() <= 1e-5


def test_padding_is_masked(tiny):
    """A padded row gives the same logits as the same text alone: the mask reaches the attention."""
    model, tok = tiny
    graph = export_float_graph(model, tok, 21)
    short, long = "apple the pear", " ".join(CORPUS.texts[0].split() * 2)
    both = {k: v.numpy() for k, v in encode(tok, [short, long]).items()}
    alone = {k: v.numpy() for k, v in encode(tok, [short]).items()}
    assert both["attention_mask"][0].sum() < both["attention_mask"].shape[1]
    np.testing.assert_allclose(_run(graph, both)[0], _run(graph, alone)[0], atol=1e-5)


def test_version_conversion_keeps_outputs_identical(tiny):
    model, tok = tiny
    base = onnxslim.slim(_torch_export(model, tok, EXPORT_MAX_OPSET))
    enc = {k: v.numpy() for k, v in encode(tok, CORPUS.texts[:5]).items()}
    expected = _run(base, enc)
    for opset, ir in ((21, 10), (25, 13)):
        lifted = convert_opset(onnx.ModelProto.FromString(base.SerializeToString()), opset)
        assert lifted.ir_version == ir
        assert np.array_equal(_run(lifted, enc), expected)


def test_token_type_ids_only_when_the_tokenizer_makes_them(tiny):
    model, tok = tiny
    assert model_input_names(model, tok) == ("input_ids", "attention_mask", "token_type_ids")
    tok_no_types = type(tok).from_pretrained(tok.name_or_path, model_input_names=["input_ids", "attention_mask"])
    assert model_input_names(model, tok_no_types) == ("input_ids", "attention_mask")
