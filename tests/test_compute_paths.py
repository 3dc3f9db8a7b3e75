"""The three compute paths on a tiny BERT: what the exporter writes, what onnxruntime runs, what is checked.

Each shipped profile family is exported and onnxruntime's optimized graph is read back: weight-only lands on
MatMulNBits, static int8 on MatMulIntegerToFloat, dynamic int8 on DynamicQuantizeMatMul /
MatMulIntegerToFloat. The dynamic path's arithmetic is checked against onnxruntime's own
DynamicQuantizeLinear, and its weights-only view against the torch model with float activations.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from tiny import tiny_corpus, tiny_model_dir

from toolchain.bitconfig import config_from_bits
from toolchain.errors import BadInputError
from toolchain.evaluate import DEFAULT_MAX_LENGTH, encode, predict_logits
from toolchain.exporters import export_model, twin_of
from toolchain.exporters.dynamic_int8 import dynamic_fake_quantize
from toolchain.exporters.metadata import read_metadata
from toolchain.models import load_model, quantizable_layers
from toolchain.profiles import ActivationQuant, DeviceProfile, default_profiles_dir, load_profile
from toolchain.quant.model import quantize_model
from toolchain.validators.kernels import check_kernels, layers_on_path
from toolchain.validators.weights_view import weights_only_view

CORPUS = tiny_corpus()
TEXTS = CORPUS.texts[1::4]
# profile -> (bits, the kernel its quantized layers must land on)
PATHS = {
    "rpi5": (4, "MatMulNBits"),
    "npu_int8": (8, "MatMulIntegerToFloat"),
    "x86_vnni_calibrated": (4, "MatMulIntegerToFloat"),
    "x86_vnni_server": (8, "DynamicQuantizeMatMul"),
    "x86_vnni_compact": (4, "DynamicQuantizeMatMul"),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(2)
    return load_model(tiny_model_dir(tmp_path_factory.mktemp("tiny")), CORPUS.label_names)


@pytest.fixture(scope="module", params=sorted(PATHS))
def exported(request, tiny, tmp_path_factory):
    model, tok = tiny
    profile = load_profile(default_profiles_dir() / f"{request.param}.yaml")
    cfg = config_from_bits(quantizable_layers(model), PATHS[profile.name][0], containers=profile.weights.container_for)
    qmodel = quantize_model(model, cfg)
    out = tmp_path_factory.mktemp(profile.name) / "model.onnx"
    return profile, qmodel, export_model(qmodel, tok, profile, cfg, out, calibration_texts=CORPUS.texts[::2])


def test_every_quantized_layer_runs_on_its_paths_kernel(exported):
    profile, _, result = exported
    md = read_metadata(onnx.load(str(result.model_path)))
    n_layers = layers_on_path(md, profile.activations)
    k = check_kernels(result.model_path, profile.activations, n_layers)
    assert k.flag is None, k.flag
    assert k.counts.get(PATHS[profile.name][1], 0) > 0
    head = len(md.head_tensors) if profile.activations is ActivationQuant.INT8_DYNAMIC else 0
    assert k.on_path >= n_layers == len(md.bit_config.layers) + head


def test_a_path_onnxruntime_does_not_take_is_flagged(exported):
    profile, _, result = exported
    if profile.activations is not ActivationQuant.NONE:
        pytest.skip("a weight-only graph is the one that cannot be on an int8 path")
    k = check_kernels(result.model_path, ActivationQuant.INT8_DYNAMIC, 12)
    assert k.on_path == 0 and "DynamicQuantizeMatMul" in k.flag and "12 quantized layers" in k.flag


def test_dynamic_path_stores_integers_only(tiny, exported):
    profile, _, result = exported
    if profile.activations is not ActivationQuant.INT8_DYNAMIC:
        pytest.skip("dynamic path only")
    graph = onnx.load(str(result.model_path)).graph
    ops = {n.op_type for n in graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    model, _ = tiny
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    big_float = [i.name for i in graph.initializer if i.data_type == TensorProto.FLOAT and len(i.dims) == 2]
    assert big_float == []  # every Linear and embedding table is int8 (head and embeddings: int8)
    n_mmi = sum(n.op_type == "MatMulInteger" for n in graph.node)
    assert n_mmi == len(quantizable_layers(model)) + 2 == len(linears)  # + pooler + classifier
    assert result.head_bytes > 0 and result.embedding_bytes > 0


def test_dynamic_weights_only_view_is_the_float_activation_model(tiny, exported):
    profile, qmodel, result = exported
    if profile.activations is not ActivationQuant.INT8_DYNAMIC:
        pytest.skip("dynamic path only")
    _, tok = tiny
    view, n = weights_only_view(onnx.load(str(result.model_path)))
    assert n == sum(1 for node in view.graph.node if node.op_type == "MatMul" and "/dequantized" in node.input[1])
    assert not any(node.op_type in ("MatMulInteger", "DynamicQuantizeLinear") for node in view.graph.node)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(view.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    enc = encode(tok, TEXTS)
    got = sess.run(None, {i.name: enc[i.name].numpy() for i in sess.get_inputs()})[0]
    float_acts = predict_logits(twin_of(qmodel, result), tok, TEXTS).numpy()
    int8_acts = predict_logits(twin_of(qmodel, result, activations=True), tok, TEXTS).numpy()
    assert np.abs(got - float_acts).max() <= 1e-4
    assert np.abs(got - int8_acts).max() > 1e-6  # the view really removed the activation quantization


@pytest.mark.parametrize("shape", [(3, 7, 16), (1, 1, 5), (2, 4)])
def test_dynamic_fake_quantize_is_onnx_dynamicquantizelinear(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=gen) * 3 + 0.5
    graph = helper.make_graph(
        [
            helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "zp"]),
            helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"]),
        ],
        "dql",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
    )
    opset = [helper.make_opsetid("", 17)]
    model = helper.make_model(graph, opset_imports=opset, ir_version=helper.find_min_ir_version_for(opset))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, {"x": x.numpy()})[0]
    assert np.abs(dynamic_fake_quantize(x).numpy() - expected).max() <= 1e-6


def _x86_with(**changes) -> dict:
    d = load_profile(default_profiles_dir() / "x86_vnni_server.yaml").model_dump(mode="json")
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = d
        for p in parents:
            target = target[p]
        target[last] = value
    return d


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"weights__containers": ["uint8"]}, "reads signed integers widened to int8"),
        (
            {"weights__containers": ["int4", "int8"], "weights__bits": [4, 8], "onnx__opset": 21},
            "widens int4 to int8 with a Cast at opset >= 21, which onnxruntime runs from 1.23; got 1.16",
        ),
        ({"weights__block_sizes": [128], "onnx__opset": 21}, "one scale per output channel"),
        ({"onnx__op_sets": ["transformer", "qdq_weights"]}, "int8_dynamic needs int8_dynamic in onnx.op_sets"),
        ({"adapter_branch": True}, "adapter_branch: not supported with activations: int8_dynamic"),
    ],
)
def test_int8_dynamic_profile_refuses_what_matmulinteger_cannot_read(changes, message):
    with pytest.raises(ValueError, match=message):
        DeviceProfile.model_validate(_x86_with(**changes))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"onnx": {"min_onnxruntime": "1.22"}}, "int8_static widens int4 to int8 with a Cast at opset >= 21"),
        ({"weights": {"schemes": ["asymmetric"], "containers": ["uint4", "uint8"]}}, "int8_static with int4"),
        ({"onnx": {"op_sets": ["transformer", "qdq_weights", "packed_gather"]}}, "needs qdq_activations"),
    ],
)
def test_int8_static_profile_refuses_what_its_widening_cannot_read(changes, message):
    d = load_profile(default_profiles_dir() / "x86_vnni_calibrated.yaml").model_dump(mode="json")
    for section, fields in changes.items():
        d[section] |= fields
    with pytest.raises(ValueError, match=message):
        DeviceProfile.model_validate(d)


def test_int8_dynamic_profile_file_error_names_the_file(tmp_path):
    import yaml

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_x86_with(weights__containers=["uint8"])))
    with pytest.raises(BadInputError, match=r"bad.yaml: weights.containers: activations: int8_dynamic"):
        load_profile(path)


def _optimized(path, tmp_path) -> onnx.ModelProto:
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return onnx.load(opts.optimized_model_filepath)


@pytest.mark.parametrize("name", ["x86_vnni_compact", "x86_vnni_calibrated"])
def test_sub_byte_containers_are_widened_to_int8_at_load_and_compute_the_same(tiny, tmp_path, name):
    """Both int8 activation paths store 4-bit layers in int4 and widen them with a Cast that onnxruntime
    folds at load: the file holds int4 initializers, the optimized graph int8 ones on the fused kernel, and
    the logits equal those of the same integers stored as int8 (static: calibrated to the same ranges)."""
    model, tok = tiny
    narrow = load_profile(default_profiles_dir() / f"{name}.yaml")
    as_int8 = DeviceProfile.model_validate(
        narrow.model_dump(mode="json")
        | {"name": "as_int8"}
        | {"weights": {**narrow.weights.model_dump(mode="json"), "containers": ["int8"]}}
    )
    outs, sizes = {}, {}
    enc = encode(tok, TEXTS)
    for profile in (narrow, as_int8):
        cfg = config_from_bits(quantizable_layers(model), 4, containers=profile.weights.container_for)
        qmodel = quantize_model(model, cfg)
        out = tmp_path / profile.name / "model.onnx"
        result = export_model(qmodel, tok, profile, cfg, out, calibration_texts=CORPUS.texts[::2])
        graph = onnx.load(str(result.model_path)).graph
        qweights = [i for i in graph.initializer if i.name.endswith(".qweight")]
        widen = [n for n in graph.node if n.op_type == "Cast" and n.name.endswith("/Widen")]
        if profile is narrow:
            assert {i.data_type for i in qweights if len(i.dims) == 2} >= {TensorProto.INT4}
            assert len(widen) == len(quantizable_layers(model))
            opt = _optimized(result.model_path, tmp_path / profile.name)
            assert not any(n.op_type == "Cast" and n.name.endswith("/Widen") for n in opt.graph.node)
            assert {i.data_type for i in opt.graph.initializer if i.name.endswith(".qweight.int8")} == {
                TensorProto.INT8
            }
        else:
            assert widen == []
        sess = ort.InferenceSession(str(result.model_path), providers=["CPUExecutionProvider"])
        outs[profile.name] = sess.run(None, {i.name: enc[i.name].numpy() for i in sess.get_inputs()})[0]
        sizes[profile.name] = result.model_path.stat().st_size
    np.testing.assert_array_equal(outs[name], outs["as_int8"])
    assert sizes[name] < sizes["as_int8"]


def test_the_search_scores_the_dynamic_path_with_its_activation_rounding(tiny):
    """A dynamic int8 profile's configurations are scored as its device computes them: every quantized
    layer's input rounded per call, the torch twin's arithmetic; the other paths with float activations."""
    from types import SimpleNamespace

    from toolchain.build.device_search import SplitDocs, arithmetic
    from toolchain.exporters.twin import torch_twin

    model, tok = tiny
    cfg = config_from_bits(quantizable_layers(model), 4)
    run = SimpleNamespace(quantized_model=lambda config, table=None: quantize_model(model, config))
    docs = SplitDocs((encode(tok, TEXTS),), tuple(range(len(TEXTS))), None)
    by_name = {n: load_profile(default_profiles_dir() / f"{n}.yaml") for n in ("x86_vnni_compact", "rpi5", "npu_int8")}
    assert [arithmetic(p)[1] for p in by_name.values()] == ["int8_dynamic", "none", "int8_static"]
    dynamic = docs.logits(run, cfg, *arithmetic(by_name["x86_vnni_compact"]))
    twin = predict_logits(torch_twin(quantize_model(model, cfg), dynamic_activations=True), tok, TEXTS)
    assert (dynamic - twin).abs().max() <= 1e-7
    assert (dynamic - docs.logits(run, cfg)).abs().max() > 1e-6  # the rounding is really applied


def test_the_search_scores_the_static_path_with_the_ranges_the_export_calibrates(tiny, tmp_path):
    """A static int8 profile's configurations are scored with each layer's input rounded to one uint8
    range, found in torch on the export's calibration texts: the ranges onnxruntime's calibrator finds on
    the exported graph, so the scorer computes what the export's twin computes."""
    from types import SimpleNamespace

    from toolchain.build.device import CALIBRATION_TEXTS, calibration_texts
    from toolchain.build.device_search import SplitDocs, arithmetic, calibration_batches
    from toolchain.exporters.twin import calibrated_qparams, torch_twin

    model, tok = tiny
    shipped = load_profile(default_profiles_dir() / "x86_vnni_calibrated.yaml")  # float tables and head:
    profile = shipped.model_copy(update={"embeddings": None, "head": "float"})  # the scorer leaves them so
    cfg = config_from_bits(quantizable_layers(model), 4, containers=profile.weights.container_for)
    qmodel = quantize_model(model, cfg)
    calib = calibration_texts(CORPUS, CALIBRATION_TEXTS)
    result = export_model(qmodel, tok, profile, cfg, tmp_path / "model.onnx", calibration_texts=calib)
    run = SimpleNamespace(
        quantized_model=lambda config, table=None: quantize_model(model, config),
        splits=SimpleNamespace(train=CORPUS),
        tokenizer=tok,
        settings=SimpleNamespace(max_length=DEFAULT_MAX_LENGTH),  # the export's default
    )
    found = calibrated_qparams(quantize_model(model, cfg), calibration_batches(run))
    assert set(found) == {s.name for s in quantizable_layers(model)} == set(result.activation_qparams)
    for layer, qp in found.items():
        onnx_qp = result.activation_qparams[layer]
        assert qp.zero_point == onnx_qp.zero_point and qp.container == onnx_qp.container
        assert qp.scale == pytest.approx(onnx_qp.scale, rel=1e-5)
    docs = SplitDocs((encode(tok, TEXTS),), tuple(range(len(TEXTS))), None)
    static = docs.logits(run, cfg, *arithmetic(profile))
    export_twin = torch_twin(qmodel, activation_qparams=result.activation_qparams)
    assert (static - predict_logits(export_twin, tok, TEXTS)).abs().max() <= 1e-5
    assert (static - docs.logits(run, cfg)).abs().max() > 1e-6  # the rounding is really applied
