"""TextDataset: documents (single texts or sentence pairs), integer labels, stable ids and (optionally) the
group each document belongs to."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from toolchain.errors import BadInputError


class Record(NamedTuple):
    """One document as a loader reads it, before labels become integers."""

    id: str
    text: str
    label: str
    group: str | None = None  # documents of one group (one speech, one author) always share a split
    text_pair: str | None = None  # the second text of a sentence-pair task (premise -> hypothesis, ...)


# One document as the model reads it: a text, or a (text, text_pair) pair.
ModelInput = str | tuple[str, str]


def tokenizer_args(inputs: Sequence[ModelInput]) -> tuple[list[str], list[str] | None]:
    """(texts, text_pairs) for a Hugging Face tokenizer call: pairs are encoded as pairs (`[CLS] a [SEP] b`),
    single texts with text_pairs None. A batch is all one kind."""
    pairs = [isinstance(x, tuple) for x in inputs]
    if any(pairs) and not all(pairs):
        raise ValueError("a batch mixes single texts and sentence pairs")
    if inputs and pairs[0]:
        return [a for a, _ in inputs], [b for _, b in inputs]
    return list(inputs), None


@dataclass(frozen=True)
class TextDataset:
    """Documents with integer labels into `label_names` and a stable id each.

    `groups` is None, or one group name per document: a split keeps every group whole (`splits.split`).
    `text_pairs` is None, or the second text of each document (a sentence-pair task); `inputs` is what the
    model reads either way."""

    texts: list[str]
    labels: list[int]
    ids: list[str]
    label_names: list[str]
    source: str
    groups: list[str] | None = None
    text_pairs: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def is_pairs(self) -> bool:
        return self.text_pairs is not None

    @cached_property
    def inputs(self) -> list[ModelInput]:
        """Each document as the model reads it: its text, or its (text, text_pair)."""
        return list(self.texts) if self.text_pairs is None else list(zip(self.texts, self.text_pairs))

    def subset(self, idx: list[int]) -> TextDataset:
        return TextDataset(
            [self.texts[i] for i in idx],
            [self.labels[i] for i in idx],
            [self.ids[i] for i in idx],
            self.label_names,
            self.source,
            None if self.groups is None else [self.groups[i] for i in idx],
            None if self.text_pairs is None else [self.text_pairs[i] for i in idx],
        )


@dataclass(frozen=True)
class Splits:
    train: TextDataset
    val: TextDataset
    test: TextDataset


def label_order(names: set[str]) -> list[str]:
    """The logit order of a dataset's labels: numeric when every label is an integer (2 before 10), otherwise
    sorted as strings. Either way it does not depend on the order the documents come in."""
    try:
        return sorted(names, key=lambda n: (int(n), n))  # ("01", "1"): both 1, still one order
    except ValueError:
        return sorted(names)


def from_records(records: list[Record], source: str) -> TextDataset:
    """Records -> TextDataset, after the checks every loader shares. Labels are in `label_order`."""
    if not records:
        raise BadInputError(f"{source}: the dataset is empty")
    for field in ("text", "text_pair"):
        empty = [r.id for r in records if getattr(r, field) is not None and not getattr(r, field).strip()]
        if empty:
            raise BadInputError(f"{source}: {len(empty)} empty {field}(s), first id {empty[0]!r}")
    uses = Counter(r.id for r in records)
    repeated = [i for i, k in uses.items() if k > 1]
    if repeated:  # test ids are written out with a package: each must name one document
        first = repeated[0]
        raise BadInputError(f"{source}: id {first!r} is used by {uses[first]} documents; ids must be unique")
    for field in ("group", "text_pair"):
        has = [getattr(r, field) is not None for r in records]
        if any(has) and not all(has):
            missing = next(r.id for r in records if getattr(r, field) is None)
            raise BadInputError(f"{source}: some documents have a {field} and some do not (first without: {missing!r})")
    names = label_order({r.label for r in records})
    if len(names) < 2:
        raise BadInputError(f"{source}: only one class ({names[0]!r}); a classifier needs at least two")
    index = {n: i for i, n in enumerate(names)}
    return TextDataset(
        texts=[r.text for r in records],
        labels=[index[r.label] for r in records],
        ids=[r.id for r in records],
        label_names=names,
        source=source,
        groups=None if records[0].group is None else [str(r.group) for r in records],
        text_pairs=None if records[0].text_pair is None else [r.text_pair for r in records],
    )
