"""Models: offline loading, bad model directories, quantizable layers, and quantize_model's exact weights."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
import torch
from torch import nn

from toolchain.bitconfig import BitConfig, LayerBits, config_from_bits
from toolchain.errors import EXIT_BAD_INPUT, BadInputError
from toolchain.models import LayerSpec, load_model, quantizable_layers
from toolchain.quant.containers import Container
from toolchain.quant.core import Scheme, dequantize, int_range, quantize_mse, quantize_rtn
from toolchain.quant.model import (
    QuantLinear,
    Rounding,
    check_config_matches,
    quantize_model,
    quantized_weights_of,
)

LABELS = ["alpha", "beta", "gamma"]
KINDS = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_path: Path):
    return load_model(tiny_model_path, LABELS)


def test_load_model_offline(tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading must not touch the network: every socket connection fails during the load."""

    def no_network(*args, **kwargs):
        raise OSError("network access attempted during load_model")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    model, tokenizer = load_model(tiny_model_path, LABELS)
    assert not model.training
    assert model.config.num_labels == 3 and model.config.id2label == dict(enumerate(LABELS))
    enc = tokenizer(["apple boat quark"], return_tensors="pt")
    assert tokenizer.unk_token_id not in enc["input_ids"][0].tolist()  # real vocabulary, not just specials
    with torch.no_grad():
        assert model(**enc).logits.shape == (1, 3)


def test_seed_fixes_the_fresh_head_whatever_came_before(tiny_model_path: Path) -> None:
    def head(seed: int | None, before: int) -> torch.Tensor:
        torch.manual_seed(before)  # whatever the caller drew earlier
        return load_model(tiny_model_path, ["a", "b", "c"], seed=seed)[0].classifier.weight

    assert torch.equal(head(0, before=1), head(0, before=2))
    assert not torch.equal(head(0, before=1), head(1, before=1))
    assert not torch.equal(head(None, before=1), head(None, before=2))  # unseeded: the caller's state decides


def test_quantizable_layers_exclude_head_and_pooler(tiny) -> None:
    model, _ = tiny
    specs = quantizable_layers(model)
    all_linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert set(all_linear) - {s.name for s in specs} == {"bert.pooler.dense", "classifier"}
    assert [(s.index, s.kind) for s in specs] == [(i, k) for i in (0, 1) for k in KINDS]
    query = LayerSpec("bert.encoder.layer.0.attention.self.query", 32, 32, 0, "attention.self.query")
    assert specs[0] == query
    assert (specs[4].out_features, specs[4].in_features) == (64, 32)  # intermediate: hidden -> 2 * hidden
    assert (specs[5].out_features, specs[5].in_features) == (32, 64)


def _copy_of(tiny_model_path: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_path, tmp_path / "model"))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "config.json").unlink(), "not a model directory (no config.json)"),
        (lambda d: (d / "model.safetensors").unlink(), "does not load"),
        (lambda d: (d / "model.safetensors").write_bytes(b"garbage" * 10), "does not load: SafetensorError"),
        (lambda d: _truncate(d / "model.safetensors", 5000), "does not load"),
        (lambda d: (d / "config.json").write_text("{not json", encoding="utf-8"), "does not load"),
        (lambda d: (d / "config.json").write_text('{"model_type": "nope"}'), "does not load"),
        (lambda d: _swap_for_bin(d), "does not load"),
        (lambda d: [(d / f).unlink() for f in ("tokenizer.json", "vocab.txt")], "no tokenizer files"),
    ],
    ids=[
        "no config",
        "no weights",
        "garbage weights",
        "truncated weights",
        "bad config json",
        "unknown model type",
        "corrupt pytorch_model.bin",
        "no tokenizer",
    ],  # fmt: skip
)
def test_bad_model_directory(tiny_model_path: Path, tmp_path: Path, damage, message: str) -> None:
    path = _copy_of(tiny_model_path, tmp_path)
    damage(path)
    with pytest.raises(BadInputError) as info:
        load_model(path, LABELS)
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no config.json"):
        load_model(tmp_path / "absent", LABELS)


def _truncate(path: Path, n: int) -> None:
    path.write_bytes(path.read_bytes()[:n])


def _swap_for_bin(d: Path) -> None:
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"junk")


# ---- quantize_model ---------------------------------------------------------------------------------


def _mixed_config(specs: list[LayerSpec]) -> BitConfig:
    """Every bit-width 2..8 across the 12 layers, asymmetric, with a ragged block (32 inputs at block 24)."""
    layers = {}
    for i, s in enumerate(specs):
        bits = 2 + i % 7
        layers[s.name] = LayerBits(
            bits=bits,
            scheme=Scheme.ASYMMETRIC,
            block_size=None if i % 2 else 24,
            container=Container.UINT8 if bits > 4 else Container.UINT4,
            out_features=s.out_features,
            in_features=s.in_features,
        )
    return BitConfig(layers=layers)


@pytest.mark.parametrize("rounding", list(Rounding))
@pytest.mark.parametrize("which", ["symmetric 3-bit per-channel", "mixed asymmetric blocked"])
def test_quantize_model_weights_are_exactly_the_integers(tiny, rounding: Rounding, which: str) -> None:
    model, _ = tiny
    specs = quantizable_layers(model)
    config = config_from_bits(specs, 3) if which.startswith("symmetric") else _mixed_config(specs)
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    qmodel = quantize_model(model, config, rounding)
    quantize = quantize_rtn if rounding is Rounding.RTN else quantize_mse

    weights = quantized_weights_of(qmodel)
    assert list(weights) == list(config.layers)
    for name, lb in config.layers.items():
        layer = qmodel.get_submodule(name)
        assert isinstance(layer, QuantLinear)
        qw = layer.qweight
        assert (qw.bits, qw.scheme, qw.block_size) == (lb.bits, lb.scheme, lb.block_size)
        lo, hi = int_range(lb.bits, lb.scheme)
        assert int(qw.q.min()) >= lo and int(qw.q.max()) <= hi
        assert torch.equal(layer.weight, dequantize(qw.q, qw.scale, qw.zero_point, qw.block_size))
        original = model.get_submodule(name)
        assert torch.equal(qw.q, quantize(original.weight.detach(), lb.bits, lb.scheme, lb.block_size).q)
        assert torch.equal(layer.bias, original.bias)
    for name in ("classifier", "bert.pooler.dense"):  # the head and pooler stay float and untouched
        assert type(qmodel.get_submodule(name)) is nn.Linear
        assert torch.equal(qmodel.get_submodule(name).weight, model.get_submodule(name).weight)
    after = model.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before)  # the input model is not modified


def test_quantized_forward_uses_exactly_the_dequantized_weights(tiny) -> None:
    """A float copy of the model holding the dequantized weights gives bit-identical logits."""
    model, tokenizer = tiny
    config = config_from_bits(quantizable_layers(model), 4, block_size=16)
    qmodel = quantize_model(model, config, Rounding.MSE)
    reference = quantize_model(model, config, Rounding.MSE)
    for name, qw in quantized_weights_of(qmodel).items():
        linear = nn.Linear(qw.shape[1], qw.shape[0])
        linear.weight.data = qw.dequantize()
        linear.bias.data = model.get_submodule(name).bias.detach().clone()
        parent, _, child = name.rpartition(".")
        setattr(reference.get_submodule(parent), child, linear)
    enc = tokenizer(["apple boat quark the a", "melon sail"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(qmodel(**enc).logits, reference(**enc).logits)
        float_logits = model(**enc).logits
        q8 = quantize_model(model, config_from_bits(quantizable_layers(model), 8), Rounding.RTN)(**enc).logits
    snr = 20 * torch.log10(float_logits.norm() / (float_logits - q8).norm())
    assert snr > 30  # 8-bit is close to float; the exact check above is for the integers that ship


def test_check_config_matches_rejects_other_models(tiny) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    model, _ = tiny
    config = config_from_bits(quantizable_layers(model), 4)
    assert check_config_matches(model, config) == quantizable_layers(model)

    def bert(hidden: int, layers: int) -> nn.Module:
        return BertForSequenceClassification(
            BertConfig(
                vocab_size=60,
                hidden_size=hidden,
                num_hidden_layers=layers,
                num_attention_heads=2,
                intermediate_size=2 * hidden,
            )
        )

    wider = bert(48, 2)
    with pytest.raises(BadInputError) as info:
        quantize_model(wider, config)
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert len(info.value.problems) == 12
    name = "bert.encoder.layer.0.intermediate.dense"
    assert f"bit config: layer {name!r} has shape (64, 32), the model's is (96, 48)" in info.value.problems

    shallower = bert(32, 1)
    with pytest.raises(BadInputError) as info:
        check_config_matches(shallower, config)
    extra = [p for p in info.value.problems if "is not a quantizable Linear of this model" in p]
    assert len(extra) == 6 and all("layer.1." in p for p in extra)

    partial = BitConfig(layers=dict(list(config.layers.items())[1:]))
    with pytest.raises(BadInputError, match="layer 'bert.encoder.layer.0.attention.self.query' is missing"):
        check_config_matches(model, partial)

    head = BitConfig(layers={**config.layers, "classifier": next(iter(config.layers.values()))})
    with pytest.raises(BadInputError, match="'classifier' is not a quantizable Linear"):
        check_config_matches(model, head)
