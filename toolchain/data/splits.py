"""Seeded, stratified train/validation/test splits; grouped when the dataset names groups.

Validation and test are ordered one document per class in turn, so any prefix of them is class-balanced: the
search's validation documents, the training's validation batch and the fidelity texts are prefixes. Train
keeps the dataset's order: its batches are shuffled per epoch, and reordering it re-draws every batch of the
float fine-tune.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence

from sklearn.model_selection import train_test_split

from toolchain.data.dataset import Splits, TextDataset
from toolchain.errors import BadInputError


def split(ds: TextDataset, seed: int = 0, val: float = 0.1, test: float = 0.2) -> Splits:
    """Stratified, seeded train/validation/test split (70/10/20 by default). A dataset with groups is split
    by group (`grouped_split`): no group has documents in two splits."""
    if ds.groups is not None:
        train_idx, val_idx, test_idx = grouped_split(ds.labels, ds.groups, seed, val, test)
    else:
        train_idx, val_idx, test_idx = _document_split(ds, seed, val, test)
    val_set, test_set = (ds.subset(interleave_classes(sorted(i), ds.labels)) for i in (val_idx, test_idx))
    return Splits(ds.subset(sorted(train_idx)), val_set, test_set)


def _document_split(ds: TextDataset, seed: int, val: float, test: float) -> tuple[list[int], list[int], list[int]]:
    counts = Counter(ds.labels)
    rare = [ds.label_names[c] for c, k in counts.items() if k < 3]
    if rare:
        raise BadInputError(f"{ds.source}: classes {rare} have fewer than 3 documents; cannot stratify a split")
    idx = list(range(len(ds)))
    rest, test_idx = train_test_split(idx, test_size=test, random_state=seed, stratify=ds.labels)
    rest_labels = [ds.labels[i] for i in rest]
    train_idx, val_idx = train_test_split(rest, test_size=val / (1 - test), random_state=seed, stratify=rest_labels)
    return train_idx, val_idx, test_idx


def grouped_split(
    labels: Sequence[int], groups: Sequence[str], seed: int, val: float, test: float
) -> tuple[list[int], list[int], list[int]]:
    """Document indices (train, val, test) with every group in one split, stratified by each group's most
    common label: per class, the class's groups in a seeded shuffle go to test until it holds `test` of
    the class's documents, then to validation until it holds `val`, the rest to train."""
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    by_class: dict[int, list[str]] = defaultdict(list)
    for g, idx in members.items():  # dicts keep first-seen order: the same groups give the same shuffle
        by_class[Counter(labels[i] for i in idx).most_common(1)[0][0]].append(g)
    few = {c: len(gs) for c, gs in by_class.items() if len(gs) < 3}
    if few:
        raise BadInputError(f"groups: classes {sorted(few)} have fewer than 3 groups; cannot split by group")
    out: tuple[list[int], list[int], list[int]] = ([], [], [])
    for c in sorted(by_class):
        class_groups = by_class[c]
        random.Random(f"split/{seed}/{c}").shuffle(class_groups)
        total = sum(len(members[g]) for g in class_groups)
        taken = {1: 0, 2: 0}  # documents placed in val (1) and test (2)
        for k, g in enumerate(class_groups):
            left = len(class_groups) - k  # keep one group each for val and train
            if taken[2] < test * total and left > 2:
                part = 2
            elif taken[1] < val * total and left > 1:
                part = 1
            else:
                part = 0
            if part:
                taken[part] += len(members[g])
            out[part].extend(members[g])
    return out


def interleave_classes(idx: Sequence[int], labels: Sequence[int]) -> list[int]:
    """`idx` ordered one per class in turn (classes by first appearance, each class in `idx` order), so
    any prefix is (nearly) class-balanced. A dataset sorted by class has its first 128 test documents in
    two of BBC News's five classes."""
    by_class: dict[int, list[int]] = {}
    for i in idx:
        by_class.setdefault(labels[i], []).append(i)
    queues = list(by_class.values())
    return [q[k] for k in range(max(map(len, queues), default=0)) for q in queues if k < len(q)]
