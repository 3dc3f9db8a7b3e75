"""The task head of a Hugging Face sequence classifier, found from the model's structure, not its names.

Every `*ForSequenceClassification` in transformers is a base model (`model.base_model_prefix`: `bert`,
`distilbert`, `roberta`, `model` for Llama, ...) plus the modules that turn its output into logits
(`classifier`; `pre_classifier` + `classifier`; `classifier.dense` + `classifier.out_proj`; `score`). Those
modules are the task head: a base checkpoint does not hold them, so they start random and train in every
stage. The output module is the head's last Linear with one output per label.

When a checkpoint already holds a trained head, its label order is the checkpoint's; `align_labels` reorders
the output module's rows so that the logits come in the data's order (`toolchain.data.label_order`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from toolchain.errors import BadInputError

# transformers' names for labels nobody named (config.json without id2label)
_PLACEHOLDER = "LABEL_{}"


def base_prefix(model: nn.Module) -> str:
    """The name of the model's base (encoder or decoder) submodule; BadInputError when it has none."""
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix or not isinstance(getattr(model, prefix, None), nn.Module):
        model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise BadInputError(
            f"model_type {model_type!r} ({type(model).__name__}): no base model {prefix!r} inside it, so its "
            "task head cannot be told from its encoder"
        )
    return prefix


def in_head(model: nn.Module, name: str) -> bool:
    """Whether the parameter or module `name` belongs to the task head (outside the base model)."""
    return not name.startswith(base_prefix(model) + ".")


def head_parameter_names(model: nn.Module) -> list[str]:
    """Every parameter of the task head, in module order."""
    return [n for n, _ in model.named_parameters() if in_head(model, n)]


def copy_head(src: nn.Module, dst: nn.Module) -> None:
    """Copy the task head's parameters of `src` into `dst` (same architecture; in place)."""
    source = dict(src.named_parameters())
    with torch.no_grad():
        for name, p in dst.named_parameters():
            if in_head(dst, name):
                p.copy_(source[name])


def output_module(model: nn.Module) -> tuple[str, nn.Linear]:
    """(name, module) of the Linear that writes the logits: the head's last Linear with num_labels outputs."""
    n_labels = model.config.num_labels
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and in_head(model, n)]
    found = [(n, m) for n, m in found if m.out_features == n_labels]
    if not found:
        raise BadInputError(
            f"model_type {model.config.model_type!r}: no Linear in its task head has {n_labels} outputs (one per label)"
        )
    return found[-1]


def trained_labels(config) -> list[str]:
    """The label names of a trained head, in logit order, from its config's id2label."""
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def other_labels(trained: Sequence[str], wanted: Sequence[str], where: str) -> BadInputError:
    """The error for a model directory whose trained head is for other labels than the data's."""
    return BadInputError(
        f"{where}: the model's trained head (config.json id2label) has labels {list(trained)}, the data has "
        f"{list(wanted)}; give data with the model's labels, or a base model without a classification head to "
        "train a new one"
    )


def align_labels(model: nn.Module, trained: Sequence[str], wanted: Sequence[str], where: str) -> None:
    """Reorder the output module of a head trained for `trained` so that its logits are in `wanted` order (in
    place). The two must name the same labels; a head whose config names none (LABEL_0, LABEL_1, ...) matches
    data labelled 0, 1, ... by position. BadInputError names both lists otherwise."""
    names, wanted = list(trained), list(wanted)
    if names == [_PLACEHOLDER.format(i) for i in range(len(names))]:
        names = [str(i) for i in range(len(names))]
    if sorted(names) != sorted(wanted):
        raise other_labels(trained, wanted, where)
    order = torch.as_tensor([names.index(name) for name in wanted])
    _, out = output_module(model)
    with torch.no_grad():
        out.weight.copy_(out.weight[order])
        if out.bias is not None:
            out.bias.copy_(out.bias[order])
