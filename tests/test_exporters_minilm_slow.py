"""Acceptance on the real default model: MiniLM with a BBC News head, post-training quantized (MSE rounding)
with a uniform or mixed BitConfig per shipped profile, exported and validated in onnxruntime.

Per profile: onnxruntime with optimizations off reproduces the torch twin within 1e-4 (100 % top-1) on the
whole test split, the checker passed, only allowed ops and dtypes, container bytes as configured, and the
ReferenceEvaluator cross-check agrees. Accuracy and default-optimization agreement are printed (run with -s);
accuracy is not asserted: at 2-2.5 bits post-training quantization alone loses the task (docs/onnxruntime.md), which
is what the adapter training is for.
"""

from __future__ import annotations

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from toolchain.bitconfig import config_from_bits
from toolchain.data import load_dataset, split
from toolchain.evaluate import encode, metrics, predict_logits
from toolchain.exporters import export_model, twin_of
from toolchain.models import default_model_path, load_model, quantizable_layers
from toolchain.profiles import default_profiles_dir, load_profile
from toolchain.quant.core import Scheme
from toolchain.quant.model import Rounding, quantize_model
from toolchain.validators import validate

pytestmark = pytest.mark.slow

HEAD_DOCS = 500  # training documents the linear head is fitted on


def _plans():
    """profile -> (bits for a layer name, scheme, block size): within each profile's budget on MiniLM."""
    return {
        "x86_vnni_server": (lambda name: 8, Scheme.SYMMETRIC, None),  # int8, 8.08 bits, int8 dynamic activations
        "rpi5": (lambda name: 4, Scheme.SYMMETRIC, 128),  # int4 block 128, 4.25 bits
        "npu_int8": (lambda name: 5, Scheme.SYMMETRIC, None),  # int8, 5.06 bits, int8 static activations
        "mcu_tiny": (lambda name: 4, Scheme.SYMMETRIC, None),  # int4, 5.39 MB of containers, int8 embeddings
        "aggressive_2bit": (
            lambda name: 3 if ".attention." in name else 2,
            Scheme.ASYMMETRIC,
            None,
        ),  # 2.40 bits
    }


@torch.no_grad()
def _fit_head(model, tok, texts, labels) -> None:
    """A linear head on tanh(CLS) (the pooler set to identity): about 93 % on BBC News, no training loop."""
    hidden = model.config.hidden_size
    model.bert.pooler.dense.weight.copy_(torch.eye(hidden))
    model.bert.pooler.dense.bias.zero_()
    feats = torch.cat([model.bert(**encode(tok, texts[i : i + 32])).pooler_output for i in range(0, len(texts), 32)])
    head = LogisticRegression(max_iter=3000).fit(feats.numpy(), labels)
    model.classifier.weight.copy_(torch.as_tensor(head.coef_, dtype=torch.float32))
    model.classifier.bias.copy_(torch.as_tensor(head.intercept_, dtype=torch.float32))


@pytest.fixture(scope="module")
def minilm():
    torch.set_num_threads(2)
    ds = load_dataset("bbc-news")
    splits = split(ds)
    model, tok = load_model(default_model_path(), ds.label_names)
    pick = list(range(0, len(splits.train), 3))[:HEAD_DOCS]
    _fit_head(model, tok, [splits.train.texts[i] for i in pick], [splits.train.labels[i] for i in pick])
    float_acc = metrics(predict_logits(model, tok, splits.test.texts), splits.test.labels).accuracy
    return model, tok, splits, float_acc


@pytest.mark.parametrize("name", list(_plans()))
def test_minilm_export_validates(minilm, name, tmp_path):
    model, tok, splits, float_acc = minilm
    profile = load_profile(default_profiles_dir() / f"{name}.yaml")
    bits_of, scheme, block = _plans()[name]
    specs = quantizable_layers(model)
    cfg = config_from_bits(
        specs,
        [bits_of(s.name) for s in specs],
        scheme=scheme,
        block_size=block,
        containers=profile.weights.container_for,
    )
    qmodel = quantize_model(model, cfg, Rounding.MSE)
    result = export_model(
        qmodel, tok, profile, cfg, tmp_path / "model.onnx", calibration_texts=splits.train.texts[:256]
    )
    reference = predict_logits(twin_of(qmodel, result), tok, splits.test.texts).numpy()
    report = validate(
        result.model_path,
        profile,
        tokenizer=tok,
        texts=splits.test.texts,
        labels=splits.test.labels,
        reference_logits=reference,
        float_reference_accuracy=float_acc,
        latency=False,
    )
    c = report.to_dict()["checks"]
    fid, acc = c["fidelity"], c["accuracy"]
    print(
        f"\n{name}: {cfg.summary()}; file {result.file_bytes / 1e6:.1f} MB | exact max|diff| "
        f"{fid['exact']['max_abs_diff']:.2e} agree {fid['exact']['top1_agreement']:.1f} % | device max|diff| "
        f"{fid['device']['max_abs_diff']:.3f} agree {fid['device']['top1_agreement']:.2f} % | accuracy float "
        f"{float_acc:.2f} exact {acc['exact']:.2f} device {acc['device']:.2f} | "
        f"ops ok {c['ops']['passed']} | cross-check {c['cross_check'].get('max_abs_diff')} | "
        f"failures {report.failures}"
    )
    if fid["full_graph_exact"]:  # static int8 activations: the full graph against the float-activation twin
        diff, agree = fid["full_graph_exact"]["max_abs_diff"], fid["full_graph_exact"]["top1_agreement"]
        print(f"  with activation Q/DQ: max|diff| {diff:.3f} agree {agree:.2f} %")
    assert fid["passed"], fid["failures"]
    assert c["ops"]["passed"], c["ops"]["failures"]
    assert c["size"]["weight_container_bytes"] == c["size"]["expected_container_bytes"]
    assert c["cross_check"]["passed"] and not c["cross_check"].get("skipped"), c["cross_check"]
