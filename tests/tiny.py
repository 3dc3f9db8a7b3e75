"""Tiny seeded models, data and training settings for the tests: built locally, never downloaded."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from toolchain.data import TextDataset

_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_TOPICS = {
    "alpha": "apple banana cherry grape lemon mango melon peach pear plum".split(),
    "beta": "anchor boat canoe ferry harbor kayak mast raft sail yacht".split(),
    "gamma": "atom boson electron ion lepton meson muon neutron photon quark".split(),
}
_FILLER = "the a of and to in is was for on with as by at from it this that".split()


def tiny_corpus(n_per_class: int = 40, seed: int = 0) -> TextDataset:
    """Three classes of short texts, each mostly filler with a few topic words: learnable but not trivial."""
    rng = random.Random(seed)
    texts, labels, ids = [], [], []
    for c, (name, words) in enumerate(_TOPICS.items()):
        for i in range(n_per_class):
            toks = [rng.choice(_FILLER) for _ in range(12)] + rng.sample(words, 3)
            rng.shuffle(toks)
            texts.append(" ".join(toks))
            labels.append(c)
            ids.append(f"{name}/{i:03d}")
    return TextDataset(texts, labels, ids, list(_TOPICS), "tiny")


def write_tiny_corpus(path: Path, n_per_class: int = 40, seed: int = 0) -> Path:
    """The tiny corpus as a folder of class subfolders (the format users bring)."""
    ds = tiny_corpus(n_per_class, seed)
    for text, doc_id in zip(ds.texts, ds.ids):
        f = Path(path) / f"{doc_id}.txt"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text, encoding="utf-8")
    return Path(path)


def write_tiny_pair_corpus(path: Path, n_per_class: int = 40, seed: int = 0) -> Path:
    """A sentence-pair task as JSONL: the label is the topic of `text_pair`; `text` is about one of the two
    other topics (a distractor), so a model that read only `text` could be right at most half the time."""
    import json

    rng = random.Random(seed)
    rows = []
    names = list(_TOPICS)
    for name in names:
        for i in range(n_per_class):
            other = rng.choice([n for n in names if n != name])  # `text` alone: at most 50 % right
            first = rng.sample(_TOPICS[other], 3) + [rng.choice(_FILLER) for _ in range(4)]
            second = rng.sample(_TOPICS[name], 4) + [rng.choice(_FILLER) for _ in range(4)]
            rng.shuffle(first)
            rng.shuffle(second)
            rows.append(
                {"id": f"{name}/{i:03d}", "text": " ".join(first), "text_pair": " ".join(second), "label": name}
            )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _save_tokenizer(path: Path, input_names: list[str] | None = None) -> int:
    """The tiny corpus's WordPiece tokenizer saved to `path`; returns the vocabulary size."""
    from transformers import BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = _SPECIAL + sorted({w for ws in _TOPICS.values() for w in ws} | set(_FILLER))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5 ignores `vocab_file=` here (every token became [UNK]): pass the vocabulary itself.
    extra = {} if input_names is None else {"model_input_names": input_names}
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True, **extra).save_pretrained(path)
    return len(vocab)


def tiny_model_dir(
    path: Path, hidden: int = 32, layers: int = 2, seed: int = 0, max_positions: int = 64, init_std: float = 0.02
) -> Path:
    """Save a seeded, randomly initialised BERT encoder and its WordPiece tokenizer to `path`. `init_std`:
    the weights' initial standard deviation (BERT's 0.02 leaves the encoder's Linears a small part of the
    output, so that even 2-bit integers barely change it)."""
    from transformers import BertConfig, BertModel

    path = Path(path)
    vocab_size = _save_tokenizer(path)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=max_positions,
        initializer_range=init_std,
    )
    BertModel(config).save_pretrained(path)
    return path


# Tiny seeded configurations of the architectures the build supports: (model_type, config arguments). The
# tokenizer is the tiny WordPiece one; [PAD] (id 0) is every model's pad token.
_ARCH = {
    "distilbert": dict(dim=64, n_layers=2, n_heads=2, hidden_dim=128),
    "roberta": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
    "electra": dict(hidden_size=64, embedding_size=64, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=128),
    "modernbert": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                       bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3),
    "llama": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                  intermediate_size=128),
    "qwen2": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                  intermediate_size=128),
    "gpt2": dict(n_embd=64, n_layer=2, n_head=2, n_inner=128),
    "mpnet": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
    "deberta-v2": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
}  # fmt: skip
ARCHITECTURES = tuple(_ARCH)
# DeBERTa-v3's relative attention (as its checkpoints configure it), on top of _ARCH["deberta-v2"]
DEBERTA_V3 = dict(relative_attention=True, position_buckets=16, pos_att_type=["p2c", "c2p"],
                  position_biased_input=False, norm_rel_ebd="layer_norm", share_att_key=True)  # fmt: skip


def tiny_architecture_dir(path: Path, model_type: str, seed: int = 0, **config) -> Path:
    """A seeded, randomly initialised base model (no task head) of `model_type` (`config` overriding its
    settings) and the tiny tokenizer (token type ids only where the architecture has them)."""
    from transformers import AutoConfig, AutoModel

    path = Path(path)
    types = model_type in ("electra",)  # the others have no token type embeddings worth feeding
    vocab_size = _save_tokenizer(path, None if types else ["input_ids", "attention_mask"])
    config = AutoConfig.for_model(
        model_type, vocab_size=vocab_size, max_position_embeddings=160, pad_token_id=0, **(_ARCH[model_type] | config)
    )
    torch.manual_seed(seed)
    AutoModel.from_config(config).save_pretrained(path)
    return path


def tiny_distilbert_dir(path: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A seeded, randomly initialised DistilBERT base model (its head, `pre_classifier` + `classifier`, is not
    saved: transformers initialises it) and the tiny WordPiece tokenizer, without token type ids."""
    from transformers import DistilBertConfig, DistilBertModel

    path = Path(path)
    vocab_size = _save_tokenizer(path, ["input_ids", "attention_mask"])
    torch.manual_seed(seed)
    config = DistilBertConfig(
        vocab_size=vocab_size, dim=hidden, n_layers=layers, n_heads=2, hidden_dim=2 * hidden, max_position_embeddings=64
    )
    DistilBertModel(config).save_pretrained(path)
    return path


def tiny_train_settings(**overrides):
    """TrainSettings for a seconds-long training run on the tiny model and corpus: a full float fine-tune
    the tiny model learns the task from, then 30 adapter steps at rank 4 with a high learning rate. The float
    learning rate stays constant: with the decay the tiny teacher fits the tiny corpus so closely that every
    configuration's distillation loss is near zero, and the adapter tests could no longer tell them apart."""
    from toolchain.adapter import TrainSettings

    tiny = {
        "max_length": 32,
        "batch_size": 8,
        "float_steps": 150,
        "float_mode": "full",
        "float_decay": False,
        "float_lr": 3e-3,
        "head_lr": 1e-2,
        "steps": 30,
        "rank": 4,
        "lr": 1e-2,
        "checkpoint_every": 10,
    }
    return TrainSettings(**(tiny | overrides))
