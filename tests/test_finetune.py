"""Float fine-tune: deterministic batches, LoRA merge exactness, the tiny task is learned."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toolchain.data import split
from toolchain.evaluate import metrics, predict_logits
from toolchain.finetune import FinetuneMode, LoRALinear, add_lora, batch_indices, finetune, lr_factor, merge_lora
from toolchain.models import load_model, quantizable_layers


def test_batches_cover_each_epoch_once_and_are_seeded():
    n, bs = 10, 3  # 3 full batches per epoch; the last document of an epoch's order is skipped
    epoch0 = [i for s in range(3) for i in batch_indices(n, bs, seed=1, step=s)]
    assert len(epoch0) == len(set(epoch0)) == 9
    assert batch_indices(n, bs, 1, 4) == batch_indices(n, bs, 1, 4)
    assert [batch_indices(n, bs, 1, s) for s in range(3)] != [batch_indices(n, bs, 2, s) for s in range(3)]


def test_learning_rate_warms_up_then_stays_or_decays_linearly():
    constant = [lr_factor(t, 100, decay=False) for t in range(100)]
    decayed = [lr_factor(t, 100, decay=True) for t in range(100)]
    assert constant[:10] == decayed[:10] == [(t + 1) / 10 for t in range(10)]  # warm-up: the first tenth
    assert constant[10:] == [1.0] * 90
    drops = [a - b for a, b in zip(decayed[10:], decayed[11:])]
    assert decayed[10] == 1.0 and decayed[-1] == pytest.approx(1 / 90)  # every trained step moves
    assert drops == pytest.approx([1 / 90] * 89)


def test_lora_linear_merges_into_the_same_function():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(6, 4), rank=2, alpha=4.0)
    with torch.no_grad():
        layer.lora_b.normal_()
    x = torch.randn(5, 6)
    want = layer(x)
    torch.testing.assert_close(layer.merged()(x), want, atol=1e-6, rtol=1e-6)


def test_add_and_merge_lora_leave_a_plain_model(tiny_model_path, tiny_data):
    model, _ = load_model(tiny_model_path, tiny_data.label_names)
    names = [s.name for s in quantizable_layers(model)]
    params = add_lora(model, rank=2)
    assert len(params) == 2 * len(names)
    assert [s.name for s in quantizable_layers(model)] == [f"{n}.base" for n in names]
    merge_lora(model)
    assert [s.name for s in quantizable_layers(model)] == names


@pytest.mark.parametrize("mode", list(FinetuneMode))
def test_finetune_learns_the_tiny_task_and_freezes(tiny_model_path, tiny_data, mode):
    torch.set_num_threads(1)  # tiny matrices: threads only add synchronisation
    try:
        torch.manual_seed(0)
        model, tok = load_model(tiny_model_path, tiny_data.label_names)
        sp = split(tiny_data, 0)
        losses = []
        lr = 3e-3 if mode is FinetuneMode.FULL else 3e-2
        finetune(
            model,
            tok,
            sp.train,
            steps=150,
            batch_size=8,
            lr=lr,
            head_lr=1e-2,
            max_length=32,
            seed=0,
            mode=mode,
            on_step=lambda s, loss: losses.append(loss),
        )
    finally:
        torch.set_num_threads(2)
    assert sum(losses[-10:]) < sum(losses[:10])
    assert not any(p.requires_grad for p in model.parameters())
    assert len(quantizable_layers(model)) == len(
        quantizable_layers(load_model(tiny_model_path, tiny_data.label_names)[0])
    )
    if mode is FinetuneMode.FULL:
        assert metrics(predict_logits(model, tok, sp.test.texts, 32), sp.test.labels).accuracy > 90
