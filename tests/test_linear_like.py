"""GPT-2's Conv1D made an nn.Linear at load: the same function, and checkpoints still in Conv1D's layout."""

from __future__ import annotations

import torch
from tiny import tiny_architecture_dir
from torch import nn
from transformers import AutoModelForSequenceClassification
from transformers.pytorch_utils import Conv1D

from toolchain.evaluate import encode
from toolchain.linear_like import StoredTransposed, as_linear
from toolchain.models import load_checkpoint, quantizable_layers

TEXTS = ["a b c d e f", "a b", "c"]


def _logits(model: nn.Module, tokenizer) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**encode(tokenizer, TEXTS)).logits


def test_a_conv1d_becomes_the_linear_that_computes_the_same():
    torch.manual_seed(0)
    conv = Conv1D(5, 3)  # 3 inputs, 5 outputs: weight stored (3, 5)
    conv.bias.data.normal_()
    holder = nn.Sequential(conv)
    x = torch.randn(2, 4, 3)
    want = conv(x)
    assert as_linear(holder) == 1
    (layer,) = holder
    assert isinstance(layer, nn.Linear) and layer.weight.shape == (5, 3)
    torch.testing.assert_close(layer(x), want)
    assert holder.state_dict()["0.weight"].shape == (3, 5)  # saved as Conv1D stores it


def test_gpt2_loads_with_linear_layers_that_are_all_searched_and_saves_a_checkpoint_gpt2_loads(tmp_path):
    model_dir = tiny_architecture_dir(tmp_path / "gpt2", "gpt2")
    ckpt = load_checkpoint(model_dir, ["neg", "pos"], seed=0)
    model, tok = ckpt.model, ckpt.tokenizer
    assert not any(isinstance(m, Conv1D) for m in model.modules())
    swapped = {n for n, m in model.named_modules() if isinstance(m, StoredTransposed)}
    assert len(swapped) == 4 * 2  # c_attn, c_proj, mlp.c_fc, mlp.c_proj in each of the 2 blocks
    assert swapped <= {s.name for s in quantizable_layers(model)}
    model.save_pretrained(tmp_path / "saved")
    tok.save_pretrained(tmp_path / "saved")
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved")  # transformers' own GPT-2
    assert isinstance(plain.transformer.h[0].attn.c_proj, Conv1D)  # square (64, 64): a transpose would load too
    torch.testing.assert_close(_logits(plain, tok), _logits(model, tok))
    again = load_checkpoint(tmp_path / "saved", ["neg", "pos"])
    assert again.fine_tuned
    torch.testing.assert_close(_logits(again.model, again.tokenizer), _logits(model, tok))
