"""Training configuration sources and held-out configurations at a budget."""

from __future__ import annotations

import random

import pytest
from random_configs import random_config_at

from toolchain.adapter.configs import (
    FilteredConfigSource,
    FixedConfigSource,
    RandomConfigSource,
    make_config,
)
from toolchain.adapter.settings import Grid
from toolchain.config_source import ConfigSource
from toolchain.errors import BadInputError
from toolchain.models import LayerSpec
from toolchain.quant.core import Scheme

SPECS = [LayerSpec(f"layer.{i}.dense", 64, 64, i, "dense") for i in range(12)]


def test_spread_source_is_seeded_and_spreads_over_budgets():
    src = RandomConfigSource(SPECS, bits=range(2, 9), grids=[Grid(), Grid(scheme=Scheme.ASYMMETRIC)])
    assert isinstance(src, ConfigSource)
    a = src.sample(random.Random(3), 40)
    b = src.sample(random.Random(3), 40)
    assert [c.digest() for c in a] == [c.digest() for c in b]
    means = [sum(c.bits_vector()) / len(SPECS) for c in a]
    assert min(means) < 3.5 and max(means) > 5.5
    assert {lb.scheme for c in a for lb in c.layers.values()} == set(Scheme)
    assert all(2 <= b <= 8 for c in a for b in c.bits_vector())


def test_spread_source_respects_non_contiguous_bits():
    src = RandomConfigSource(SPECS, bits=[2, 4, 8])
    got = {b for c in src.sample(random.Random(0), 30) for b in c.bits_vector()}
    assert got == {2, 4, 8}


def test_filtered_source_keeps_only_what_it_admits_and_stays_seeded():
    spread = RandomConfigSource(SPECS, bits=range(2, 9))
    low = FilteredConfigSource(spread, lambda c: c.avg_bits <= 3.2)
    assert isinstance(low, ConfigSource)
    a, b = low.sample(random.Random(5), 30), low.sample(random.Random(5), 30)
    assert [c.digest() for c in a] == [c.digest() for c in b]
    assert all(c.avg_bits <= 3.2 for c in a)
    assert max(c.avg_bits for c in spread.sample(random.Random(5), 30)) > 4  # the filter is what kept them low
    with pytest.raises(BadInputError, match="no training configuration admitted in 50 draws"):
        FilteredConfigSource(spread, lambda c: False, max_tries=50).sample(random.Random(0), 1)


def test_filtered_source_falls_back_when_its_filter_admits_almost_nothing():
    cheapest = make_config(SPECS, [2] * 12, [Grid()] * 12)
    only = FilteredConfigSource(RandomConfigSource(SPECS, bits=range(2, 9)), lambda c: c == cheapest, cheapest)
    assert only.sample(random.Random(0), 3) == [cheapest] * 3
    with pytest.raises(ValueError, match="fallback"):
        FilteredConfigSource(RandomConfigSource(SPECS), lambda c: False, cheapest)


def test_fixed_source_returns_its_configurations():
    cfg = make_config(SPECS, [3] * 12, [Grid()] * 12)
    assert FixedConfigSource([cfg]).sample(random.Random(0), 2) == [cfg, cfg]


@pytest.mark.parametrize("target", [3.0, 3.5, 4.5])
def test_random_config_at_stays_within_and_near_the_budget(target):
    cfg = random_config_at(SPECS, target, random.Random(1))
    # overhead per weight: one fp32 scale per 64 weights = 0.5 bits; one 64x64 layer step is 1/12 bit
    assert target - 1 / 12 - 1e-9 <= cfg.avg_bits <= target
    assert len(set(cfg.bits_vector())) > 1


def test_random_config_below_the_minimum_is_refused():
    with pytest.raises(BadInputError, match="below the smallest"):
        random_config_at(SPECS, 2.2, random.Random(0))
