"""Search space, costs and budget reachability against hand-computed numbers."""

from __future__ import annotations

import pytest
from search_toy import bert_like_specs

from toolchain.errors import BadInputError
from toolchain.models import LayerSpec
from toolchain.profiles import Budget, load_profile, load_profiles
from toolchain.quant.containers import Container
from toolchain.quant.core import Scheme
from toolchain.search.space import Limit, SearchSpace, Variant, cost_of, require_reachable, smallest_cost

ONE = [LayerSpec("l0", 4, 8, 0, "dense")]  # 32 weights, 4 rows


def _with_budget(profile, **budget):
    return profile.model_copy(update={"budget": Budget(**budget)})


def test_costs_of_one_layer_by_hand(profiles_dir):
    rpi5 = load_profile(profiles_dir / "rpi5.yaml")
    space = SearchSpace.from_profile(rpi5, ONE)
    c = cost_of(space.build([4], Variant(Scheme.SYMMETRIC, None)))
    # 32 weights * 4 bits + 4 rows * 32-bit scale = 256 bits over 32 weights; int4: 16 B + 16 B of scales
    assert c.avg_bits == 8.0
    assert c.container_bytes == 32
    c5 = cost_of(space.build([5], Variant(Scheme.SYMMETRIC, None)))
    assert c5.container_bytes == 32 + 16  # 5 bits need the int8 container: 32 B of weights
    assert c5.container_mb == pytest.approx(48e-6)


def test_asymmetric_blocked_cost_by_hand(profiles_dir):
    agg = load_profile(profiles_dir / "aggressive_2bit.yaml")
    space = SearchSpace("t", tuple(ONE), (2,), (Scheme.ASYMMETRIC,), (4,), agg.weights.container_for)
    config = space.build([2], Variant(Scheme.ASYMMETRIC, 4))
    assert config.layers["l0"].container is Container.UINT2
    # 8 groups of 4: 64 weight bits + 8 * (32 scale + 2 zero point) = 336 bits; bytes 8 + 32 + 2
    assert cost_of(config).avg_bits == 336 / 32
    assert cost_of(config).container_bytes == 42


def test_levels_leave_out_widths_without_a_container(profiles_dir):
    agg = load_profile(profiles_dir / "aggressive_2bit.yaml")
    space = SearchSpace.from_profile(agg, ONE)
    assert space.levels(Variant(Scheme.SYMMETRIC, None)) == (2, 3, 4)
    npu = load_profile(profiles_dir / "npu_int8.yaml")
    assert SearchSpace.from_profile(npu, ONE).variants() == [Variant(Scheme.SYMMETRIC, None)]


def test_union_and_adopt(profiles_dir):
    specs = bert_like_specs(1, 32, 64)
    profiles = load_profiles([profiles_dir])
    spaces = [SearchSpace.from_profile(p, specs) for p in profiles]
    union = SearchSpace.union(spaces)
    assert union.bits == (2, 3, 4, 5, 6, 7, 8)
    assert union.schemes == (Scheme.SYMMETRIC, Scheme.ASYMMETRIC)
    assert union.block_sizes == (None, 32, 64, 128)
    sym, asym = Scheme.SYMMETRIC, Scheme.ASYMMETRIC
    # only pairs some profile allows: asymmetric comes with per-channel only (aggressive_2bit)
    assert union.variants() == [Variant(sym, b) for b in (None, 32, 64, 128)] + [Variant(asym, None)]
    assert union.adopt(union.build(4, Variant(asym, None))) is not None
    assert union.adopt(union.build(4, Variant(asym, 32))) is None
    npu = next(s for s in spaces if s.name == "npu_int8")
    mixed = union.build([4, 5, 6, 7, 8, 4], Variant(Scheme.SYMMETRIC, None))
    adopted = npu.adopt(mixed)
    assert adopted is not None and {l.container for l in adopted.layers.values()} == {Container.INT8}
    assert union.adopt(mixed) == mixed
    low = union.build([2, 5, 6, 7, 8, 3], Variant(Scheme.SYMMETRIC, None))
    assert npu.adopt(low) is None and npu.mismatches(low) == 2
    assert npu.mismatches(union.build(4, Variant(Scheme.SYMMETRIC, 32))) == 1 + 0  # block 32 not allowed


def test_limit_admits_and_excess():
    limit = Limit(max_logical_bits=100.0, max_container_bytes=None)
    assert limit.excess(100.0, 10**9) == 0.0
    assert limit.excess(110.0, 0) == pytest.approx(0.1)
    both = Limit(100.0, 50.0)
    assert both.excess(120.0, 75.0) == pytest.approx(0.2 + 0.5)


def test_smallest_cost_of_shipped_profiles_on_minilm_shapes(profiles_dir):
    specs = bert_like_specs()  # 6 blocks, 384 hidden: 10,616,832 weights, 20,736 rows
    rows, n = 20_736, 10_616_832
    by_name = {p.name: smallest_cost(p, specs) for p in load_profiles([profiles_dir])}
    assert by_name["rpi5"].avg_bits == pytest.approx(3 + rows * 32 / n)
    assert by_name["npu_int8"].avg_bits == pytest.approx(4 + rows * 32 / n)
    # mcu_tiny stores 2..4 bits in int4: half a byte per weight plus 4 bytes of scale per row
    assert by_name["mcu_tiny"].container_bytes == n // 2 + 4 * rows
    # aggressive_2bit: symmetric 2 bits in int2 (a quarter byte) is the fewest bytes
    assert by_name["aggressive_2bit"].container_bytes == n // 4 + 4 * rows


def test_unreachable_budget_names_profile_budget_and_smallest_cost(profiles_dir):
    specs = bert_like_specs(2, 32, 64)  # 16,384 weights in 448 rows: scales cost 0.875 bits per weight
    agg = load_profile(profiles_dir / "aggressive_2bit.yaml")
    with pytest.raises(BadInputError) as err:
        require_reachable([agg, load_profile(profiles_dir / "rpi5.yaml")], specs)
    (message,) = err.value.problems
    assert message.startswith(str(profiles_dir / "aggressive_2bit.yaml")) and "max_avg_bits 2.75" in message
    assert "2.8750 bits/weight" in message  # 2 + 448 * 32 / 16384


def test_unreachable_weight_mb_names_smallest_mb(profiles_dir):
    specs = bert_like_specs()
    mcu = _with_budget(load_profile(profiles_dir / "mcu_tiny.yaml"), max_weight_mb=5.0)
    with pytest.raises(BadInputError) as err:
        require_reachable([mcu], specs)
    assert "max_weight_mb 5.0" in str(err.value)
    assert f"{(10_616_832 // 2 + 4 * 20_736) / 1e6:.4f} MB" in str(err.value)
    require_reachable([_with_budget(mcu, max_weight_mb=5.4)], specs)  # 5.391 MB fits: no error
