"""Integer embedding tables: packing, gather-then-dequantize in onnxruntime against hand-computed rows at
every bit-width and granularity, what a table costs, and the whole-model budget it counts in."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from tiny import tiny_corpus, tiny_model_dir

from toolchain.errors import BadInputError
from toolchain.exporters.embedding_qdq import quantize_embeddings
from toolchain.profiles import EmbeddingQuant, TensorQuant, default_profiles_dir, load_profile
from toolchain.quant.core import Scheme
from toolchain.quant.tables import pack_fields, quantize_table, table_cost, unpack_fields
from toolchain.whole_model import OutsideParams, outside_cost, search_profile, search_profiles

SPECS = [
    EmbeddingQuant(bits=8),
    EmbeddingQuant(bits=4),
    EmbeddingQuant(bits=4, block_size=16),
    EmbeddingQuant(bits=4, scheme=Scheme.ASYMMETRIC, block_size=16),
    EmbeddingQuant(bits=3, block_size=32),
    EmbeddingQuant(bits=3, scheme=Scheme.ASYMMETRIC),
    EmbeddingQuant(bits=2, scheme=Scheme.ASYMMETRIC, block_size=16),
    EmbeddingQuant(bits=2, scheme=Scheme.ASYMMETRIC),
    EmbeddingQuant(bits=2, block_size=32),
]
VOCAB, HIDDEN = 5, 64
IDS = np.array([[0, 4, 2, 2], [3, 1, 0, 4]], np.int64)


def test_fields_pack_low_bits_first():
    assert pack_fields(np.array([[1, 2, 3, 0, 3]], np.uint8), 2).tolist() == [[0b00111001, 0b00000011]]
    assert pack_fields(np.array([[0xA, 0x5, 0x7]], np.uint8), 4).tolist() == [[0x5A, 0x07]]
    values = np.random.default_rng(0).integers(0, 4, (3, 37)).astype(np.uint8)
    assert np.array_equal(unpack_fields(pack_fields(values, 2), 2, 37), values)


def _exact_table(spec: EmbeddingQuant) -> tuple[torch.Tensor, np.ndarray]:
    """A table whose entries lie on the spec's grid, with steps that are powers of two (exact in fp16): its
    quantization is lossless, so the gathered rows must equal the table itself. Returns (table, its
    integers) with each group reaching both ends of its range, so the scale is the step."""
    rng = np.random.default_rng(spec.bits)
    block = HIDDEN if spec.block_size is None else spec.block_size
    groups = HIDDEN // block
    steps = 2.0 ** rng.integers(-6, -1, (VOCAB, groups))
    if spec.scheme is Scheme.SYMMETRIC:
        qmax = 2 ** (spec.bits - 1) - 1
        q = rng.integers(-qmax, qmax + 1, (VOCAB, HIDDEN))
        q[:, ::block] = qmax  # absmax reached: scale = step
        w = q * np.repeat(steps, block, axis=1)
    else:
        qmax = 2**spec.bits - 1
        q = rng.integers(0, qmax + 1, (VOCAB, HIDDEN))
        q[:, ::block], q[:, 1::block] = 0, qmax  # min and max reached: scale = step
        zero = rng.integers(1, qmax, (VOCAB, groups))  # strictly inside: the range holds 0
        w = (q - np.repeat(zero, block, axis=1)) * np.repeat(steps, block, axis=1)
    return torch.tensor(w, dtype=torch.float32), q


def _gather_graph(table: torch.Tensor, opset: int) -> onnx.ModelProto:
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])
    out = helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["batch", "seq", HIDDEN])
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0)],
        "gather",
        [ids],
        [out],
        [numpy_helper.from_array(table.numpy(), "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    return model


@pytest.mark.parametrize("spec", SPECS, ids=[s.label() for s in SPECS])
@pytest.mark.parametrize("opset", [13, 21])
def test_gathered_rows_dequantize_to_hand_computed_values(spec, opset):
    table, q = _exact_table(spec)
    qw = quantize_table(table, spec)
    assert np.array_equal(qw.q.numpy(), q)  # the hand-made integers, recovered
    model = _gather_graph(table, opset)
    stored = quantize_embeddings(model, {"emb": (table, qw)}, spec, opset)["emb"]
    onnx.checker.check_model(model, full_check=True)
    inits = {t.name: t for t in model.graph.initializer}
    assert "table" not in inits  # the float table is gone
    assert {inits[n].data_type for n in stored} <= {TensorProto.INT8, TensorProto.UINT8, TensorProto.FLOAT16}
    assert sum(len(inits[n].raw_data) for n in stored) == table_cost(VOCAB, HIDDEN, spec)[1]
    if spec.bits < 8:
        assert {n.op_type for n in model.graph.node} >= {"Gather", "BitShift"}
        assert not any(n.op_type == "Gather" and n.input[0] == "table" for n in model.graph.node)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"ids": IDS})[0]
    assert got.shape == (*IDS.shape, HIDDEN)
    assert np.array_equal(got, table.numpy()[IDS])  # hand-computed: the table's own rows, exactly


@pytest.mark.parametrize("spec", SPECS, ids=[s.label() for s in SPECS])
def test_random_tables_match_their_dequantized_integers(spec):
    table = torch.randn(VOCAB, HIDDEN, generator=torch.Generator().manual_seed(1))
    model = _gather_graph(table, 21)
    quantize_embeddings(model, {"emb": (table, quantize_table(table, spec))}, spec, 21)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"ids": IDS})[0]
    assert np.array_equal(got, quantize_table(table, spec).dequantize().numpy()[IDS])


def test_table_costs():
    # 2-bit asymmetric, block 32, 384 wide: 12 groups of 2 + 16 + 2 bits; 96 B fields, 24 B scales, 3 B zero points
    spec = EmbeddingQuant(bits=2, scheme=Scheme.ASYMMETRIC, block_size=32)
    assert table_cost(10, 384, spec) == (10 * (384 * 2 + 12 * 18), 10 * (96 + 24 + 3))
    assert table_cost(10, 384, EmbeddingQuant(bits=3))[1] == 10 * (192 + 2)  # 3-bit entries in 4-bit fields
    assert table_cost(10, 384, EmbeddingQuant(bits=8)) == (10 * (384 * 8 + 16), 10 * (384 + 2))
    assert table_cost(10, 384, None) == (10 * 384 * 32, 10 * 384 * 4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from toolchain.models import load_model, quantizable_layers

    model, _ = load_model(tiny_model_dir(tmp_path_factory.mktemp("tiny")), tiny_corpus().label_names)
    return model, quantizable_layers(model)


def test_float_embeddings_are_budgeted_at_their_fp32_size(tiny):
    model, specs = tiny
    outside = OutsideParams.of_model(model, specs)
    assert outside.n_params == sum(p.numel() for p in model.parameters())
    rpi5 = load_profile(default_profiles_dir() / "rpi5.yaml")
    floats = rpi5.model_copy(update={"embeddings": None, "head": TensorQuant.FLOAT})
    cost = outside_cost(outside, floats)
    assert cost.n_params == outside.n_params - outside.layer_params
    assert cost.logical_bits == 32 * cost.n_params and cost.stored_bytes == 4 * cost.n_params
    # what is left for the searched layers: the whole-model bits minus the fp32 parameters, per layer weight
    left = search_profile(
        floats.model_copy(update={"budget": floats.budget.model_copy(update={"max_avg_bits": 20})}), outside
    )
    assert left.budget.max_avg_bits == pytest.approx((20 * outside.n_params - cost.logical_bits) / outside.layer_params)
    assert search_profile(floats, outside) is None  # 4.5 bits over all: fp32 tables alone spend more


def test_unmeetable_whole_model_budget_is_refused_naming_the_smallest_file(tiny):
    model, specs = tiny
    agg = load_profile(default_profiles_dir() / "aggressive_2bit.yaml")
    tight = agg.model_copy(
        update={"budget": agg.budget.model_copy(update={"max_avg_bits": None, "max_model_mb": 0.01})}
    )
    with pytest.raises(BadInputError) as err:
        search_profiles([tight], model, specs)
    (message,) = err.value.problems
    assert "budget.max_model_mb 0.01 (smallest achievable file: about" in message
    assert "embeddings int2 asymmetric block 32, head int8" in message
    roomy = agg.model_copy(update={"budget": agg.budget.model_copy(update={"max_avg_bits": None})})
    (left,) = search_profiles([roomy], model, specs)  # 9 MB: the file's limit moves onto the layers
    assert left.budget.max_model_mb is None and left.budget.max_weight_mb < 9.0


def test_a_table_the_format_cannot_split_is_refused(tiny):
    model, specs = tiny
    rpi5 = load_profile(default_profiles_dir() / "rpi5.yaml")
    wide_blocks = rpi5.model_copy(update={"embeddings": EmbeddingQuant(bits=4, block_size=64)})  # hidden 32
    with pytest.raises(
        BadInputError, match="embeddings.block_size: 64 does not divide table 'bert.embeddings.word_embeddings'"
    ):
        search_profiles([wide_blocks], model, specs)


def test_onnxruntime_keeps_packed_tables_packed(tmp_path):
    """Gather-then-dequantize survives onnxruntime's optimizations: its optimized graph (what the session
    holds) has no float copy of a table, and the kernels check reports that graph's weight bytes."""
    from toolchain.bitconfig import config_from_bits
    from toolchain.exporters import export_model
    from toolchain.models import load_model, quantizable_layers
    from toolchain.quant.model import quantize_model
    from toolchain.validators.kernels import check_kernels
    from toolchain.validators.size import tensor_nbytes

    model, tok = load_model(tiny_model_dir(tmp_path / "tiny"), tiny_corpus().label_names)
    rpi5 = load_profile(default_profiles_dir() / "rpi5.yaml")
    cfg = config_from_bits(quantizable_layers(model), 4, containers=rpi5.weights.container_for)
    result = export_model(quantize_model(model, cfg), tok, rpi5, cfg, tmp_path / "model.onnx")
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(result.model_path), opts, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(tmp_path / "optimized.onnx")).graph
    tables = {tuple(m.weight.shape) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    floats = {tuple(i.dims) for i in graph.initializer if i.data_type == TensorProto.FLOAT}
    assert not floats & tables
    assert any(n.op_type == "BitShift" for n in graph.node)
    k = check_kernels(result.model_path, rpi5.activations, len(cfg.layers))
    assert k.runtime_weight_bytes == sum(tensor_nbytes(i) for i in graph.initializer) > 0
