"""Float fine-tune of the base model and its task head: the reference every quantized model is compared to.

Two modes (`FinetuneMode`): LoRA (r=8 on every quantizable Linear, merged into the weights afterwards, so the
result is a plain model) or a full fine-tune. Dropout is off (eval mode) throughout: the run is short, and a
deterministic forward is what makes a resumed run reproduce an uninterrupted one.

The batch at step t is a pure function of (seed, t) (`batch_indices`), so any stage can resume mid-way without
saving a data-loader state.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection
from enum import StrEnum

import torch
from torch import nn

from toolchain.data import TextDataset
from toolchain.evaluate import encode
from toolchain.models import quantizable_layers
from toolchain.quant.model import get_module, set_module
from toolchain.task_head import in_head


class FinetuneMode(StrEnum):
    """LORA is the default (a pretrained encoder's features stay, and 400 steps fit on a CPU). FULL is for a
    model whose encoder has not learned features a low-rank update could adapt, such as a randomly
    initialised or very small one (the tests' tiny models), or for a user who can afford the cost."""

    LORA = "lora"  # low-rank update of every quantizable Linear, merged after training
    FULL = "full"  # every weight trains (embeddings and LayerNorms included)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Document indices of training step `step`: epoch-wise shuffles of range(n), seeded by (seed, epoch)."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    order = list(range(n))
    random.Random(f"batches/{seed}/{epoch}").shuffle(order)
    return order[k * batch_size : (k + 1) * batch_size]


class LoRALinear(nn.Module):
    """y = x W^T + b + (alpha / r) x A^T B^T with B = 0 at init (the float fine-tune's adapter)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.scaling = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # PEFT's default

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scaling

    def merged(self) -> nn.Linear:
        with torch.no_grad():
            self.base.weight += (self.lora_b @ self.lora_a) * self.scaling
        return self.base


def add_lora(model: nn.Module, rank: int = 8, alpha: float = 16.0) -> list[nn.Parameter]:
    """Wrap every quantizable Linear in a LoRALinear (in place); returns the new trainable parameters."""
    params = []
    for spec in quantizable_layers(model):
        wrapped = LoRALinear(get_module(model, spec.name), rank, alpha)
        set_module(model, spec.name, wrapped)
        params += [wrapped.lora_a, wrapped.lora_b]
    return params


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRALinear back into a plain Linear (in place)."""
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name in names:
        set_module(model, name, get_module(model, name).merged())
    return model


def _optimizer(
    model: nn.Module, mode: FinetuneMode, lr: float, head_lr: float, fresh: Collection[str]
) -> torch.optim.Optimizer:
    for p in model.parameters():
        p.requires_grad_(mode is FinetuneMode.FULL)
    head = [p for n, p in model.named_parameters() if in_head(model, n) or n in fresh]
    for p in head:
        p.requires_grad_(True)
    body = add_lora(model) if mode is FinetuneMode.LORA else [p for p in model.parameters() if p.requires_grad]
    head_ids = {id(p) for p in head}
    body = [p for p in body if id(p) not in head_ids]
    return torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": head_lr}], weight_decay=0.0)


def lr_factor(step: int, steps: int, decay: bool) -> float:
    """Multiplier of the learning rates at `step` of `steps`: linear warm-up over the first tenth, then 1,
    or with `decay` a straight line from 1 down to 1/(steps - warm-up) at the last step."""
    warm = max(1, steps // 10)
    if step < warm or not decay:
        return min(1.0, (step + 1) / warm)
    return (steps - step) / (steps - warm)


def finetune(
    model: nn.Module,
    tokenizer,
    train: TextDataset,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    head_lr: float,
    max_length: int,
    seed: int,
    mode: FinetuneMode = FinetuneMode.LORA,
    decay: bool = False,
    fresh: Collection[str] = (),
    on_step: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """Fine-tune `model` in place (LoRA merged afterwards) and return it frozen; `on_step(step, loss)`.

    The task head (`task_head.in_head`) and the parameters named in `fresh` (initialised by transformers
    because the checkpoint lacked them, `models.Checkpoint.new_params`) train whole, at `head_lr`.

    The learning rates warm up linearly over the first tenth of the steps, then stay constant, or with
    `decay` fall linearly towards zero, reaching 1/(steps - warm-up) of their peak at the last step
    (`lr_factor`)."""
    torch.manual_seed(seed)
    model.eval()  # no dropout: deterministic, and the run is too short to need it
    opt = _optimizer(model, mode, lr, head_lr, fresh)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: lr_factor(t, steps, decay))
    labels = torch.as_tensor(train.labels)
    for step in range(steps):
        idx = batch_indices(len(train), batch_size, seed, step)
        logits = model(**encode(tokenizer, [train.inputs[i] for i in idx], max_length)).logits
        loss = nn.functional.cross_entropy(logits, labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(step, loss.item())
    if mode is FinetuneMode.LORA:
        merge_lora(model)
    for p in model.parameters():
        p.requires_grad_(False)
    return model
