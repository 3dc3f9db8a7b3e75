"""Linear-like layers made Linear: GPT-2's (and OpenAI GPT's) `Conv1D` is a Linear whose weight is stored
transposed, (in, out) instead of (out, in). Every stage of edgeq quantizes, adapts and exports `nn.Linear`, so
`as_linear` swaps each Conv1D of a loaded model for an `nn.Linear` computing the same function.

The swap is invisible on disk: `StoredTransposed.state_dict` writes the weight back in Conv1D's layout and
`load_state_dict` reads that layout, so `save_pretrained` writes a checkpoint the architecture's own code loads,
and a saved-then-loaded model round-trips.
"""

from __future__ import annotations

import torch
from torch import nn


class StoredTransposed(nn.Linear):
    """An nn.Linear whose state dict holds its weight as (in_features, out_features), as Conv1D stores it."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features)
        self._register_state_dict_hook(_transpose_on_save)
        self._register_load_state_dict_pre_hook(_transpose_on_load)

    @classmethod
    def of(cls, conv: nn.Module) -> StoredTransposed:
        """The Linear computing what `conv` (a Conv1D: x @ weight + bias) computes, on its device and dtype."""
        n_in, n_out = conv.weight.shape
        layer = cls(n_in, n_out).to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(conv.weight.t())
            layer.bias.copy_(conv.bias)
        return layer


def _transpose_on_save(module, state_dict, prefix, local_metadata):
    # state_dict(keep_vars=True) (the tracer's way to find the parameters) gets the parameter itself
    key = prefix + "weight"
    if key in state_dict and not isinstance(state_dict[key], nn.Parameter):
        state_dict[key] = state_dict[key].t().contiguous()
    return state_dict


def _transpose_on_load(module, state_dict, prefix, *args):
    key = prefix + "weight"
    if key in state_dict:
        state_dict[key] = state_dict[key].t().contiguous()


def is_conv1d(module: nn.Module) -> bool:
    """Whether `module` is transformers' Conv1D (matched by class, so no transformers import is needed)."""
    cls = type(module)
    return cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers.")


def as_linear(model: nn.Module) -> int:
    """Replace every Conv1D of `model` by the equivalent `StoredTransposed` Linear, in place; how many."""
    swaps = [(name, m) for name, m in model.named_modules() if is_conv1d(m)]
    for name, conv in swaps:
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, StoredTransposed.of(conv))
    return len(swaps)
