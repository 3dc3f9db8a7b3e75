"""Pareto filtering, ranks, hypervolume and budget bins on hand-computed points."""

from __future__ import annotations

import random

import numpy as np
import pytest

from toolchain.search.pareto import (
    bin_edges,
    bin_of,
    contributions,
    hypervolume,
    keep_per_bin,
    nondominated_ranks,
    pareto_indices,
)

#            0       1       2       3       4       5
POINTS = [(2, 5.0), (3, 3.0), (3, 4.0), (4, 3.0), (5, 1.0), (2, 5.0)]


def _dominates(a, b) -> bool:
    """a is no worse than b in both objectives and better in at least one (the definition, re-derived)."""
    return a[0] <= b[0] and a[1] <= b[1] and (a[0] < b[0] or a[1] < b[1])


def test_pareto_indices_are_exactly_the_non_dominated_points():
    rng = random.Random(3)
    for _ in range(50):
        points = [(rng.randint(0, 6), rng.randint(0, 6)) for _ in range(rng.randint(1, 12))]
        want = {i for i, p in enumerate(points) if not any(_dominates(q, p) for q in points)}
        assert set(pareto_indices(points)) == want, points


def test_pareto_indices_by_hand():
    # (3,4) is dominated by (3,3); (4,3) by (3,3); the duplicate (2,5) is kept: equal points do not dominate
    assert pareto_indices(POINTS) == [0, 5, 1, 4]
    assert pareto_indices([]) == []


def test_ranks_by_hand():
    assert nondominated_ranks(POINTS) == [0, 0, 1, 1, 0, 0]
    assert nondominated_ranks([(1, 3), (2, 2), (3, 1), (2, 3), (3, 3)]) == [0, 0, 0, 1, 2]


def test_hypervolume_by_hand():
    # reference (6, 6), horizontal strips from the top: (6-2)*(6-5) + (6-3)*(5-3) + (6-5)*(3-1) = 4 + 6 + 2
    assert hypervolume(POINTS, (6, 6)) == pytest.approx(12.0)
    assert hypervolume([(1, 1)], (3, 4)) == pytest.approx(6.0)
    assert hypervolume([(3, 1), (1, 9)], (3, 4)) == 0.0  # on or beyond the reference: nothing
    assert hypervolume([], (3, 4)) == 0.0


def test_hypervolume_matches_optuna_reference_implementation():
    try:
        from optuna._hypervolume import compute_hypervolume  # private: only a cross-check here
    except ImportError:
        pytest.skip("optuna's hypervolume helper moved")
    rng = random.Random(0)
    for _ in range(20):
        pts = [(rng.uniform(0, 10), rng.uniform(0, 10)) for _ in range(rng.randint(1, 30))]
        want = compute_hypervolume(np.array(pts), np.array([11.0, 11.0]))
        assert hypervolume(pts, (11.0, 11.0)) == pytest.approx(want, rel=1e-12)


def test_contributions_by_hand():
    # front (2,5) (3,3) (5,1) with reference (6,6): exclusive boxes 1*1, 2*2, 1*2
    c = contributions([(2, 5.0), (3, 3.0), (5, 1.0), (4, 4.0)], (6, 6))
    assert c == pytest.approx([1.0, 4.0, 2.0, 0.0])


def test_bins():
    edges = bin_edges(2.0, 8.0, 3)
    assert edges == [2.0, 4.0, 6.0, 8.0]
    assert [bin_of(x, edges) for x in (1.0, 2.0, 3.99, 4.0, 7.9, 8.0, 9.0)] == [0, 0, 0, 1, 2, 2, 2]
    with pytest.raises(ValueError):
        bin_edges(3.0, 2.0, 2)


def test_keep_per_bin_keeps_each_bins_front_first():
    pts = [(2.0, 9.0), (3.0, 8.0), (3.5, 8.5), (5.0, 1.0), (5.5, 1.5), (4.5, 2.0), (7.0, 0.5)]
    kept = keep_per_bin(pts, [2.0, 4.0, 6.0, 8.0], per_bin=2, reference=(9.0, 10.0))
    # bin 0: front (2,9),(3,8); bin 1: front (4.5,2),(5,1), (5.5,1.5) is dominated; bin 2: (7,0.5)
    assert kept == [0, 1, 5, 3, 6]
    # room for three in bin 1: the dominated point fills it; (3.5, 8.5) fills bin 0
    assert sorted(keep_per_bin(pts, [2.0, 4.0, 6.0, 8.0], 3, (9.0, 10.0))) == [0, 1, 2, 3, 4, 5, 6]


def test_keep_per_bin_drops_the_smallest_contribution():
    # one bin, front of four; keeping three drops (2.1, 4.9): it adds the least area
    pts = [(2.0, 5.0), (2.1, 4.9), (3.0, 3.0), (4.0, 1.0)]
    assert keep_per_bin(pts, [2.0, 5.0], 3, (5.0, 6.0)) == [0, 2, 3]
