"""The task head read from the model's structure, and model directories that already hold a trained head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny import tiny_distilbert_dir
from torch import nn

from toolchain.data import split
from toolchain.data.dataset import Record, from_records, label_order
from toolchain.errors import BadInputError
from toolchain.evaluate import encode
from toolchain.finetune import FinetuneMode, finetune
from toolchain.models import load_checkpoint, quantizable_layers
from toolchain.task_head import head_parameter_names, output_module

LABELS = ["alpha", "beta", "gamma"]


def _save_classifier(src: Path, dst: Path, id2label: dict[int, str]) -> tuple[Path, nn.Module]:
    """A 'fine-tuned' classifier: the tiny model with a seeded random head, saved with `id2label`."""
    ckpt = load_checkpoint(src, list(id2label.values()), seed=3)
    model = ckpt.model
    model.config.id2label, model.config.label2id = dict(id2label), {n: i for i, n in id2label.items()}
    model.save_pretrained(dst)
    ckpt.tokenizer.save_pretrained(dst)
    return dst, model


def _logits(model: nn.Module, tokenizer, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return model(**encode(tokenizer, texts)).logits


def test_labels_order_numerically_when_every_label_is_an_integer():
    assert label_order({"10", "2", "1", "0"}) == ["0", "1", "2", "10"]
    assert label_order({"01", "1", "2"}) == ["01", "1", "2"]  # equal as integers: still one fixed order
    assert label_order({"10", "2", "b"}) == ["10", "2", "b"]  # one non-integer: sorted as strings
    rows = [Record(str(i), f"text {i}", lab) for i, lab in enumerate(["10", "2", "1", "2", "10", "1"])]
    ds = from_records(rows, "t")
    assert ds.label_names == ["1", "2", "10"] and ds.labels == [2, 1, 0, 1, 2, 0]


def test_a_base_model_gets_a_new_head_and_says_so(tiny_model_path):
    ckpt = load_checkpoint(tiny_model_path, LABELS, seed=0)
    assert not ckpt.fine_tuned
    assert ckpt.new_params == {"classifier.weight", "classifier.bias"}
    assert head_parameter_names(ckpt.model) == ["classifier.weight", "classifier.bias"]


def test_a_trained_head_is_kept_and_its_rows_follow_the_datas_label_order(tiny_model_path, tmp_path):
    """The directory's head was trained for (gamma, alpha, beta); the data orders them alpha, beta, gamma."""
    trained = {0: "gamma", 1: "alpha", 2: "beta"}
    path, original = _save_classifier(tiny_model_path, tmp_path / "ft", trained)
    ckpt = load_checkpoint(path, LABELS, seed=11)  # the seed must not matter: nothing is initialised
    assert ckpt.fine_tuned and ckpt.new_params == frozenset()
    texts = ["apple banana the", "boat sail of", "quark muon a"]
    want = _logits(original, ckpt.tokenizer, texts)[:, [1, 2, 0]]  # alpha, beta, gamma columns
    torch.testing.assert_close(_logits(ckpt.model, ckpt.tokenizer, texts), want, rtol=0, atol=0)
    assert ckpt.model.config.id2label == dict(enumerate(LABELS))


@pytest.mark.parametrize(
    "trained, data, ok",
    [
        ({0: "LABEL_0", 1: "LABEL_1"}, ["0", "1"], True),  # a config without label names: by position
        ({0: "LABEL_0", 1: "LABEL_1"}, ["neg", "pos"], False),
        ({0: "neg", 1: "pos"}, ["negative", "positive"], False),
        ({0: "neg", 1: "pos"}, ["neg", "neutral", "pos"], False),  # another number of classes
    ],
)
def test_a_trained_head_for_other_labels_is_refused_naming_both(tiny_model_path, tmp_path, trained, data, ok):
    path, _ = _save_classifier(tiny_model_path, tmp_path / "ft", trained)
    if ok:
        assert load_checkpoint(path, data).fine_tuned
        return
    with pytest.raises(BadInputError) as info:
        load_checkpoint(path, data)
    message = str(info.value)
    assert message.startswith(f"{path}: the model's trained head")
    assert str(list(trained.values())) in message and str(data) in message


def test_distilbert_head_is_found_from_the_structure_and_trains(tmp_path, tiny_data):
    """DistilBERT's head is `pre_classifier` + `classifier`; a base checkpoint holds neither, so both start
    random, both train in the float fine-tune, and neither is searched."""
    ckpt = load_checkpoint(tiny_distilbert_dir(tmp_path / "distil"), tiny_data.label_names, seed=0)
    model = ckpt.model
    head = {"pre_classifier.weight", "pre_classifier.bias", "classifier.weight", "classifier.bias"}
    assert set(head_parameter_names(model)) == head == ckpt.new_params
    assert output_module(model)[0] == "classifier"
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert linears - {s.name for s in quantizable_layers(model)} == {"pre_classifier", "classifier"}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train = split(tiny_data, 0).train
    finetune(model, ckpt.tokenizer, train, steps=3, batch_size=8, lr=1e-3, head_lr=1e-2, max_length=32, seed=0,
             mode=FinetuneMode.LORA, fresh=ckpt.new_params)  # fmt: skip
    after = dict(model.named_parameters())
    assert all(not torch.equal(before[n], after[n]) for n in head)  # the whole head trained
    encoder = "distilbert.transformer.layer.0.attention.q_lin.weight"  # LoRA-updated, merged back
    assert not torch.equal(before[encoder], after[encoder])
    assert torch.equal(before["distilbert.embeddings.word_embeddings.weight"],
                       after["distilbert.embeddings.word_embeddings.weight"])  # fmt: skip
