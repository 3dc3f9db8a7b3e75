"""End-to-end export of the tiny BERT for every shipped profile: onnxruntime (optimizations off)
reproduces the torch model, the checker passes, the graph holds only allowed ops and dtypes, and no float
copy of a quantized weight remains."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from tiny import tiny_corpus, tiny_model_dir

from toolchain.bitconfig import BitConfig, config_from_bits
from toolchain.evaluate import encode, predict_logits
from toolchain.exporters import export_model, twin_of
from toolchain.exporters import save as save_module
from toolchain.exporters.activation_qdq import Calibration
from toolchain.exporters.metadata import read_metadata
from toolchain.models import load_model, quantizable_layers
from toolchain.profiles import ActivationQuant, EmbeddingQuant, TensorQuant, default_profiles_dir, load_profile
from toolchain.quant.model import quantize_model, quantized_weights_of

PROFILES = sorted(p.stem for p in default_profiles_dir().glob("*.yaml"))
CORPUS = tiny_corpus()
TEXTS = CORPUS.texts[1::4]  # 30 texts of varying length: one padded batch


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(2)
    return load_model(tiny_model_dir(tmp_path_factory.mktemp("tiny")), CORPUS.label_names)


def mixed_config(model, profile) -> BitConfig:
    """Bits cycling through the profile's allowed widths, its last scheme and its smallest block (if any)."""
    allowed = profile.weights.bits
    blocks = [b for b in profile.granularities() if b is not None]
    specs = quantizable_layers(model)
    return config_from_bits(
        specs,
        [allowed[i % len(allowed)] for i in range(len(specs))],
        scheme=profile.weights.schemes[-1],
        block_size=min(blocks, default=None),
        containers=profile.weights.container_for,
    )


def _exact_session(path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _ort_logits(sess, tok, texts) -> np.ndarray:
    enc = encode(tok, texts)
    return sess.run(None, {i.name: enc[i.name].numpy() for i in sess.get_inputs()})[0]


@pytest.fixture(scope="module", params=PROFILES)
def exported(request, tiny, tmp_path_factory):
    model, tok = tiny
    profile = load_profile(default_profiles_dir() / f"{request.param}.yaml")
    cfg = mixed_config(model, profile)
    qmodel = quantize_model(model, cfg)
    out = tmp_path_factory.mktemp(profile.name) / "model.onnx"
    result = export_model(qmodel, tok, profile, cfg, out, calibration_texts=CORPUS.texts[::2])
    return profile, cfg, qmodel, result


def test_onnxruntime_exact_matches_torch(exported, tiny):
    profile, _, qmodel, result = exported
    _, tok = tiny
    sess = _exact_session(result.model_path)
    for texts in (TEXTS, TEXTS[:3], TEXTS[5:6]):  # dynamic batch and sequence sizes
        ref = predict_logits(twin_of(qmodel, result, activations=True), tok, texts).numpy()
        got = _ort_logits(sess, tok, texts)
        assert np.abs(got - ref).max() <= 1e-4
        assert (got.argmax(1) == ref.argmax(1)).all()


def test_checker_opset_ops_and_dtypes(exported):
    profile, cfg, _, result = exported
    model = onnx.load(str(result.model_path))
    onnx.checker.check_model(model, full_check=True)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset == profile.onnx.opset
    assert model.ir_version == onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)])
    assert {n.op_type for n in model.graph.node} <= profile.onnx.allowed_ops()
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    containers = {lb.container.onnx_type for lb in cfg.layers.values()}
    e = profile.embeddings
    extra = (
        set()
        if e is None
        else {onnx.TensorProto.FLOAT16, onnx.TensorProto.INT8 if e.bits == 8 else onnx.TensorProto.UINT8}
    )
    extra |= {onnx.TensorProto.INT8} if profile.head is TensorQuant.INT8 else set()
    extra |= {onnx.TensorProto.UINT8} if profile.activations is ActivationQuant.INT8_STATIC else set()
    assert {i.data_type for i in model.graph.initializer} <= {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.INT64,
    } | containers | extra


def test_no_float_copy_of_quantized_weights(exported):
    _, _, qmodel, result = exported
    dense = [qw.dequantize().numpy() for qw in quantized_weights_of(qmodel).values()]
    model = onnx.load(str(result.model_path))
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) == 2:
            arr = onnx.numpy_helper.to_array(init)
            assert not any(arr.shape == w.shape and np.array_equal(arr, w) for w in dense), init.name
            assert not any(arr.shape == w.T.shape and np.array_equal(arr, w.T) for w in dense), init.name
    # the input that reads a layer's integers: weight-only / static paths; dynamic path, int8 containers;
    # dynamic path, int4 / int2 containers widened to int8 first
    weight_input = {"DequantizeLinear": 0, "MatMulInteger": 1, "Cast": 0}
    n_weights = sum(
        1
        for n in model.graph.node
        if n.op_type in weight_input and n.input[weight_input[n.op_type]].endswith(".qweight")
    )
    n_head = len(read_metadata(model).head_tensors)
    assert n_weights == len(dense) + n_head  # an embedding's DequantizeLinear reads gathered rows, not a table


def test_container_bytes_and_metadata(exported):
    profile, cfg, _, result = exported
    assert result.layer_container_bytes == {name: lb.container_bytes for name, lb in cfg.layers.items()}
    assert result.file_bytes == result.model_path.stat().st_size and result.files == [result.model_path]
    md = read_metadata(onnx.load(str(result.model_path)))
    assert md.profile == profile.name and md.bit_config == cfg
    props = {p.key: p.value for p in onnx.load(str(result.model_path)).metadata_props}
    assert json.loads(props["edgeq.layer_bits"]) == {n: lb.bits for n, lb in cfg.layers.items()}
    summary = json.loads(json.dumps(result.to_dict()))  # the result is JSON-serialisable as is
    assert summary["weight_container_bytes"] == cfg.container_bytes and summary["external_data"] is False


def test_float_model_is_the_same_model_in_float(exported, tiny):
    profile, _, qmodel, result = exported
    _, tok = tiny
    float_graph = onnx.load(str(result.float_model_path))
    assert not any(n.op_type in ("DequantizeLinear", "QuantizeLinear") for n in float_graph.graph.node)
    ref = predict_logits(qmodel, tok, TEXTS).numpy()  # the plain QuantLinear model, weights in float
    assert np.abs(_ort_logits(_exact_session(result.float_model_path), tok, TEXTS) - ref).max() <= 1e-4


def test_uniform_int4_weight_bytes_track_the_container(tiny, tmp_path):
    """params x 4 bits + fp32 per-channel scales, within 10 %, measured on the DequantizeLinear inputs."""
    model, tok = tiny
    rpi5 = load_profile(default_profiles_dir() / "rpi5.yaml")
    specs = quantizable_layers(model)
    cfg = config_from_bits(specs, 4, containers=rpi5.weights.container_for)
    result = export_model(quantize_model(model, cfg), tok, rpi5, cfg, tmp_path / "model.onnx")
    graph = onnx.load(str(result.model_path)).graph
    inits = {i.name: i for i in graph.initializer}
    head = {t for names in read_metadata(onnx.load(str(result.model_path))).head_tensors.values() for t in names}
    dq_inputs = [
        name
        for n in graph.node
        if n.op_type == "DequantizeLinear"
        for name in n.input
        if name in inits and name not in head
    ]
    measured = sum(len(inits[name].raw_data) for name in dq_inputs)
    expected = sum(s.out_features * s.in_features for s in specs) * 4 / 8 + sum(s.out_features for s in specs) * 4
    assert abs(measured - expected) <= 0.1 * expected
    assert all(inits[n].data_type == onnx.TensorProto.INT4 for n in dq_inputs if n.endswith(".qweight"))


def test_int8_embeddings_gather_integers_first(tiny, tmp_path):
    model, tok = tiny
    mcu = load_profile(default_profiles_dir() / "mcu_tiny.yaml").model_copy(
        update={"embeddings": EmbeddingQuant(bits=8)}
    )
    cfg = config_from_bits(quantizable_layers(model), 4, containers=mcu.weights.container_for)
    qmodel = quantize_model(model, cfg)
    result = export_model(qmodel, tok, mcu, cfg, tmp_path / "model.onnx")
    graph = onnx.load(str(result.model_path)).graph
    inits = {i.name: i for i in graph.initializer}
    vocab, hidden = model.get_input_embeddings().weight.shape
    assert not any(
        tuple(i.dims) == (vocab, hidden) and i.data_type == onnx.TensorProto.FLOAT for i in graph.initializer
    )
    gathers = [n for n in graph.node if n.op_type == "Gather" and n.input[1] == "input_ids"]
    assert {inits[n.input[0]].data_type for n in gathers} == {
        onnx.TensorProto.INT8,
        onnx.TensorProto.FLOAT16,
    }  # rows, scales
    produced_by_gather = {o for n in gathers for o in n.output}
    emb_dq = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in produced_by_gather]
    tables = {n: m.weight.shape for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)}
    assert len(emb_dq) == 1 and set(result.embedding_tables) == set(tables)  # word, position, token type
    assert result.embedding_bytes == sum(v * h + v * 2 for v, h in tables.values())  # int8 rows + fp16 scales
    floats = [tuple(i.dims) for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    assert not set(floats) & set(tables.values())
    # the exported graph is the int8-embedding model: its torch twin matches, the plain model does not exactly
    got = _ort_logits(_exact_session(result.model_path), tok, TEXTS)
    assert np.abs(got - predict_logits(twin_of(qmodel, result), tok, TEXTS).numpy()).max() <= 1e-4
    assert np.abs(got - predict_logits(qmodel, tok, TEXTS).numpy()).max() > 1e-6


def test_static_int8_activations_feed_every_quantized_matmul(tiny, tmp_path):
    model, tok = tiny
    npu = load_profile(default_profiles_dir() / "npu_int8.yaml")
    cfg = config_from_bits(quantizable_layers(model), 8, containers=npu.weights.container_for)
    result = export_model(
        quantize_model(model, cfg),
        tok,
        npu,
        cfg,
        tmp_path / "model.onnx",
        calibration_texts=CORPUS.texts[::2],
    )
    graph = onnx.load(str(result.model_path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    weighted = [
        n
        for n in graph.node
        if n.op_type == "MatMul" and n.input[1] in producer and producer[n.input[1]].op_type == "DequantizeLinear"
    ]
    head = read_metadata(onnx.load(str(result.model_path))).head_tensors  # npu_int8: pooler, classifier
    assert len(weighted) == len(cfg.layers)  # the head computes in Gemm nodes
    for node in weighted:
        dq = producer[node.input[0]]
        assert dq.op_type == "DequantizeLinear" and producer[dq.input[0]].op_type == "QuantizeLinear"
    assert set(result.activation_qparams) == set(cfg.layers) | set(head)
    assert all(0 <= qp.zero_point <= 255 and qp.scale > 0 for qp in result.activation_qparams.values())


def test_large_models_use_external_data(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    monkeypatch.setattr(save_module, "EXTERNAL_DATA_BYTES", 10_000)
    rpi5 = load_profile(default_profiles_dir() / "rpi5.yaml")
    cfg = config_from_bits(quantizable_layers(model), 4, containers=rpi5.weights.container_for)
    qmodel = quantize_model(model, cfg)
    result = export_model(qmodel, tok, rpi5, cfg, tmp_path / "model.onnx")
    assert result.external_data and result.files == [tmp_path / "model.onnx", tmp_path / "model.onnx.data"]
    assert result.file_bytes == sum(f.stat().st_size for f in result.files)
    onnx.checker.check_model(str(result.model_path), full_check=True)
    got = _ort_logits(_exact_session(result.model_path), tok, TEXTS)
    assert np.abs(got - predict_logits(twin_of(qmodel, result), tok, TEXTS).numpy()).max() <= 1e-4


def test_percentile_calibration_narrows_activation_ranges(tiny, tmp_path):
    model, tok = tiny
    npu = load_profile(default_profiles_dir() / "npu_int8.yaml")
    cfg = config_from_bits(quantizable_layers(model), 8, containers=npu.weights.container_for)
    qmodel = quantize_model(model, cfg)
    scales = {}
    for method in Calibration:
        result = export_model(
            qmodel,
            tok,
            npu,
            cfg,
            tmp_path / method / "model.onnx",
            calibration_texts=CORPUS.texts[::2],
            calibration=method,
        )
        scales[method] = {layer: qp.scale for layer, qp in result.activation_qparams.items()}
    assert all(
        scales[Calibration.PERCENTILE][k] <= scales[Calibration.MINMAX][k] * (1 + 1e-6)
        for k in scales[Calibration.MINMAX]
    )
    assert any(scales[Calibration.PERCENTILE][k] < scales[Calibration.MINMAX][k] for k in scales[Calibration.MINMAX])
