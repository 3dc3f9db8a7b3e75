"""Embedding tables trained with the adapter: what a step trains with is what a score and a package compute."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from tiny import tiny_train_settings

from toolchain.adapter import Grid, RandomConfigSource, Run, make_config, train
from toolchain.adapter.train_loop import table_plan
from toolchain.errors import BadInputError
from toolchain.evaluate import encode
from toolchain.exporters import export_model, twin_of
from toolchain.models import table_modules
from toolchain.profiles import EmbeddingQuant, load_profile
from toolchain.quant.core import Scheme
from toolchain.quant.model import QuantEmbedding
from toolchain.quant.tables import quantize_table
from toolchain.validators.runner import Mode, input_names, session

TWO_BIT = EmbeddingQuant(bits=2, scheme=Scheme.ASYMMETRIC, block_size=16)
FOUR_BIT = EmbeddingQuant(bits=4, block_size=16)
INT8 = EmbeddingQuant(bits=8)
SETTINGS = tiny_train_settings(steps=30, bits=[2, 4, 8], grids=[Grid()], tables=[TWO_BIT, FOUR_BIT, None])

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tiny_model_path, tiny_data, tmp_path_factory) -> Run:
    return train(tiny_model_path, tiny_data, tmp_path_factory.mktemp("run") / "r", SETTINGS, progress=False)


def _config(run: Run):
    return RandomConfigSource(run.specs, SETTINGS.bits, SETTINGS.grids).sample(random.Random(3), 1)[0]


def test_every_format_and_float_tables_are_drawn():
    drawn = {str(t) for step in range(SETTINGS.steps) for t in table_plan(SETTINGS, step, 2)}
    assert drawn == {str(TWO_BIT), str(FOUR_BIT), "None"}
    assert table_plan(tiny_train_settings(), 0, 3) == [None, None, None]  # a run without formats


@pytest.mark.parametrize("table", [TWO_BIT, FOUR_BIT, None], ids=["int2", "int4", "float"])
def test_scored_model_equals_the_training_forward(run, table):
    config = _config(run)
    inputs = encode(run.tokenizer, run.splits.test.texts, SETTINGS.max_length)
    with torch.no_grad():
        run.adapter_model.set_config(config, table=table)
        trained = run.adapter_model(**inputs)
        scored = run.quantized_model(config, table=table)(**inputs).logits
    assert (trained - scored).abs().max().item() <= 1e-5


def test_trained_tables_keep_their_integers_and_learn_fp16_scales(run):
    """PEQA on the tables: the integers are the float table's quantize_table integers; the scales moved
    and are exact in fp16, the precision a package stores."""
    float_net = run.float_model()
    moved = 0.0
    for spec in (TWO_BIT, FOUR_BIT):
        assert run.trained_table(spec)
        tables = run.tables(spec)
        assert sorted(tables) == sorted(table_modules(float_net))
        for name, qw in tables.items():
            ptq = quantize_table(float_net.get_submodule(name).weight, spec)
            assert torch.equal(qw.q, ptq.q)
            assert (qw.zero_point is None) == (ptq.zero_point is None)
            if qw.zero_point is not None:
                assert torch.equal(qw.zero_point, ptq.zero_point)
            assert torch.equal(qw.scale, qw.scale.half().float())
            moved = max(moved, (qw.scale - ptq.scale).abs().max().item())
    assert moved > 0


def test_a_format_the_run_did_not_train_is_plain_ptq(run):
    assert not run.trained_table(INT8)
    float_net = run.float_model()
    for name, qw in run.tables(INT8).items():
        assert torch.equal(qw.scale, quantize_table(float_net.get_submodule(name).weight, INT8).scale)


def test_a_run_without_formats_refuses_a_table_in_training(run, tiny_model_path):
    from toolchain.adapter.model import CoAModel

    plain = CoAModel(
        run.float_model(), run.specs, run.adapter_model.layers[0].base, SETTINGS.model_copy(update={"tables": []})
    )
    with pytest.raises(BadInputError, match="trained no table formats"):
        plain.set_config(_config(run), table=TWO_BIT)


def test_the_package_stores_the_trained_tables(run, profiles_dir, tmp_path):
    """Exported with the trained 2-bit tables, the graph's lookups are the trained tables' rows: onnxruntime
    agrees with the torch twin, which quantizes nothing again."""
    profile = load_profile(profiles_dir / "rpi5.yaml").model_copy(update={"embeddings": TWO_BIT})
    adopted = make_config(run.specs, [4] * len(run.specs), [Grid()] * len(run.specs))
    qmodel = run.quantized_model(adopted, table=TWO_BIT)
    word = next(m for m in qmodel.modules() if isinstance(m, QuantEmbedding))
    export = export_model(qmodel, run.tokenizer, profile, adopted, tmp_path / "model.onnx")
    twin = twin_of(qmodel, export)
    texts = run.splits.test.texts[:8]
    enc = encode(run.tokenizer, texts, SETTINGS.max_length)
    with torch.no_grad():
        want = twin(**enc).logits.numpy()
    sess = session(export.model_path, Mode.EXACT)
    got = sess.run(None, {n: enc[n].numpy().astype(np.int64) for n in input_names(sess)})[0]
    assert np.abs(got - want).max() < 1e-4
    assert torch.equal(twin.get_submodule(_name_of(qmodel, word)).weight, word.weight)
    with pytest.raises(BadInputError, match="the profile stores"):
        other = profile.model_copy(update={"embeddings": FOUR_BIT})
        export_model(qmodel, run.tokenizer, other, adopted, tmp_path / "other.onnx")


def _name_of(model, module) -> str:
    return next(n for n, m in model.named_modules() if m is module)
