"""The independent constraint checker catches every kind of violation and agrees with BitConfig's costs."""

from __future__ import annotations

import random

import pytest
from search_constraints import check_constraints
from search_toy import bert_like_specs

from toolchain.bitconfig import BitConfig, LayerBits, config_from_bits
from toolchain.profiles import Budget, load_profile
from toolchain.quant.containers import Container
from toolchain.quant.core import Scheme

SPECS = bert_like_specs(1, 32, 64)  # 6 layers, 8,192 weights, 224 rows


@pytest.fixture
def rpi5(profiles_dir):
    return load_profile(profiles_dir / "rpi5.yaml")


def _ok_config(profile, bits=4, block=None):
    return config_from_bits(SPECS, bits, block_size=block, containers=profile.weights.container_for)


def _replace(config: BitConfig, layer: int, **changes) -> BitConfig:
    """A copy with one layer's fields changed, built without validation (as a hand-edited file could be)."""
    name = list(config.layers)[layer]
    fields = {**config.layers[name].model_dump(), **changes}
    layers = dict(config.layers)
    layers[name] = LayerBits.model_construct(**fields)
    return BitConfig.model_construct(layers=layers)


def test_feasible_config_passes(rpi5):
    assert check_constraints(rpi5, _ok_config(rpi5, 3), SPECS) == []
    assert check_constraints(rpi5, _ok_config(rpi5, 3, block=64), SPECS) == []


def test_every_constraint_is_caught(profiles_dir, rpi5):
    base = _ok_config(rpi5, 3)
    cases = {
        "bits 2 not allowed": _replace(base, 0, bits=2),
        "scheme asymmetric not allowed": _replace(base, 1, scheme=Scheme.ASYMMETRIC, container=Container.UINT4),
        "block size 16 not allowed": _replace(base, 2, block_size=16),
        "container int2 not allowed": _replace(base, 3, bits=2, container=Container.INT2),
        "do not fit int4": _replace(base, 4, bits=5),
    }
    for expected, config in cases.items():
        problems = check_constraints(rpi5, config, SPECS)
        assert any(expected in p for p in problems), (expected, problems)
        assert all("'rpi5'" in p for p in problems)
    npu = load_profile(profiles_dir / "npu_int8.yaml")
    no_channel = npu.model_copy(update={"weights": npu.weights.model_copy(update={"per_channel": False})})
    assert any("per-channel scales not allowed" in p for p in check_constraints(no_channel, _ok_config(npu, 8)))


def test_budgets_are_caught(profiles_dir, rpi5):
    # 4 bits per channel on these shapes: 4 + 224 * 32 / 8192 = 4.875 bits per weight
    over = check_constraints(rpi5, _ok_config(rpi5, 4), SPECS)
    assert over == ["profile 'rpi5': 4.8750 bits/parameter over budget.max_avg_bits 4.5"]
    mcu = load_profile(profiles_dir / "mcu_tiny.yaml")
    tight = mcu.model_copy(update={"budget": Budget(max_weight_mb=0.005)})
    # int4: 4,096 B of weights + 224 * 4 B of scales = 4,992 B fits 5,000 B; one int8 layer does not
    assert check_constraints(tight, _ok_config(mcu, 4), SPECS) == []
    mixed = config_from_bits(SPECS, [8, 4, 4, 4, 4, 4], containers=mcu.weights.container_for)
    assert check_constraints(tight, mixed, SPECS) == [
        "profile 'mcu_tiny': 0.0055 MB of weights over budget.max_weight_mb 0.005"
    ]


def test_layer_names_and_shapes_are_checked(rpi5):
    config = _ok_config(rpi5, 3)
    problems = check_constraints(rpi5, config, SPECS[:-1] + [SPECS[-1].__class__("extra", 8, 8, 0, "x")])
    assert any("'bert.encoder.layer.0.output.dense' is not a quantizable layer" in p for p in problems)
    assert any("'extra' of the model has no configuration" in p for p in problems)
    wrong = [s.__class__(s.name, s.out_features, s.in_features * 2, s.index, s.kind) for s in SPECS]
    assert sum("shape" in p for p in check_constraints(rpi5, config, wrong)) == len(SPECS)


def test_independent_costs_agree_with_bitconfig(profiles_dir):
    """Random configurations just inside and just outside a budget set at their own BitConfig cost."""
    agg = load_profile(profiles_dir / "aggressive_2bit.yaml")
    agg = agg.model_copy(update={"weights": agg.weights.model_copy(update={"block_sizes": [16, 32]})})
    rng = random.Random(0)
    for _ in range(30):
        scheme = rng.choice([Scheme.SYMMETRIC, Scheme.ASYMMETRIC])
        block = rng.choice([None, 16, 32])
        bits = [rng.choice([2, 3, 4]) for _ in SPECS]
        config = config_from_bits(
            SPECS, bits, scheme=scheme, block_size=block, containers=agg.weights.container_for
        ).model_copy(update={"branch_rank": rng.choice([None, 1, 4])})  # aggressive_2bit allows a branch
        mb = config.container_bytes / 1e6
        exact = agg.model_copy(update={"budget": Budget(max_avg_bits=config.avg_bits, max_weight_mb=mb)})
        assert check_constraints(exact, config, SPECS) == []
        under = agg.model_copy(
            update={
                "budget": Budget(
                    max_avg_bits=config.avg_bits * (1 - 1e-6),
                    max_weight_mb=(config.container_bytes - 1) / 1e6,
                )
            }
        )
        assert sum("over budget" in p for p in check_constraints(under, config, SPECS)) == 2


def test_adapter_branch_needs_a_profile_that_allows_it(profiles_dir, rpi5):
    config = _ok_config(rpi5, 3).model_copy(update={"branch_rank": 2})  # 5.67 bits/weight on these tiny layers
    roomy = rpi5.model_copy(update={"budget": Budget(max_avg_bits=6)})
    assert check_constraints(roomy, config, SPECS) == [
        "profile 'rpi5': an adapter branch is not allowed (adapter_branch: false)"
    ]
    assert check_constraints(roomy.model_copy(update={"adapter_branch": True}), config, SPECS) == []
    over = check_constraints(rpi5.model_copy(update={"adapter_branch": True}), config, SPECS)
    assert over == ["profile 'rpi5': 5.6719 bits/parameter over budget.max_avg_bits 4.5"]
