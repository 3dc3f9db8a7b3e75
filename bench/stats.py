"""The statistics every comparison reports: an accuracy's 95 % interval and McNemar's exact paired test."""

from __future__ import annotations

from collections.abc import Sequence

from scipy.stats import binomtest

ALPHA = 0.05


def accuracy_interval(correct: int, n: int) -> tuple[float, float]:
    """Wilson score 95 % interval of an accuracy, in percent."""
    ci = binomtest(correct, n).proportion_ci(confidence_level=1 - ALPHA, method="wilson")
    return 100.0 * ci.low, 100.0 * ci.high


def mcnemar(pred_a: Sequence[int], pred_b: Sequence[int], labels: Sequence[int]) -> dict:
    """McNemar's exact test of two classifiers on the same documents: documents only `a` gets right, only
    `b` gets right, and the two-sided p-value of that split under "equally accurate" (binomial, 1/2)."""
    if not len(pred_a) == len(pred_b) == len(labels):
        raise ValueError(f"lengths differ: {len(pred_a)}, {len(pred_b)}, {len(labels)}")
    only_a = sum(a == y != b for a, b, y in zip(pred_a, pred_b, labels))
    only_b = sum(b == y != a for a, b, y in zip(pred_a, pred_b, labels))
    p = binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
    return {"only_a_right": only_a, "only_b_right": only_b, "p_value": float(p), "significant": bool(p < ALPHA)}


def encode_predictions(pred: Sequence[int]) -> str:
    """Predicted classes as one digit each (a compact JSON field); classes 0..9 only."""
    if any(not 0 <= int(p) <= 9 for p in pred):
        raise ValueError("encode_predictions holds classes 0..9; store a list for more classes")
    return "".join(str(int(p)) for p in pred)


def decode_predictions(field: str | list[int]) -> list[int]:
    return [int(c) for c in field] if isinstance(field, str) else list(field)
