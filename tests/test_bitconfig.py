"""BitConfig: logical bits and container bytes by hand, container checks, JSON round trip, bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from toolchain.bitconfig import BitConfig, LayerBits, config_from_bits, smallest_container
from toolchain.errors import EXIT_BAD_INPUT, BadInputError
from toolchain.models import LayerSpec
from toolchain.profiles import load_profile
from toolchain.quant.containers import Container
from toolchain.quant.core import Scheme

SYM, ASYM = Scheme.SYMMETRIC, Scheme.ASYMMETRIC


def _layer(bits=3, scheme=SYM, block=None, container=Container.INT4, out=4, inp=64) -> LayerBits:
    return LayerBits(bits=bits, scheme=scheme, block_size=block, container=container, out_features=out, in_features=inp)


# (layer, logical bits, container bytes), mostly a 4 x 64 weight (256 weights), 3 bits, 4-bit container.
# per-channel: 4 groups; block 32: 8 groups. Overhead per group: 32 (fp32 scale) + 3 (zero point, asymmetric).
# Container bytes: 256 * 4 / 8 = 128 weight bytes + 4 bytes per scale + packed 4-bit zero points.
HAND = [
    (_layer(), 256 * 3 + 4 * 32, 128 + 4 * 4),  # 896 bits, 144 bytes
    (_layer(scheme=ASYM, container=Container.UINT4), 256 * 3 + 4 * 35, 128 + 16 + 2),  # 908, 146
    (_layer(block=32), 256 * 3 + 8 * 32, 128 + 8 * 4),  # 1024 = 4.0 bits/weight, 160
    (_layer(block=32, scheme=ASYM, container=Container.UINT4), 256 * 3 + 8 * 35, 128 + 32 + 4),  # 1048, 164
    # the same 3 bits in an 8-bit container: logical unchanged, container doubles the weight bytes
    (_layer(container=Container.INT8), 256 * 3 + 4 * 32, 256 + 16),
    # ragged blocks: 70 inputs at block 32 -> 3 groups per row, 12 groups
    (_layer(block=32, inp=70), 280 * 3 + 12 * 32, 140 + 48),
    # odd weight count in a 4-bit container rounds up to a whole byte: 15 weights -> 8 bytes
    (_layer(out=3, inp=5, bits=4), 15 * 4 + 3 * 32, 8 + 12),
    # 2-bit asymmetric in UINT2, 5 groups of zero points -> ceil(10 / 8) = 2 bytes
    (_layer(bits=2, scheme=ASYM, container=Container.UINT2, out=5, inp=8), 40 * 2 + 5 * 34, 10 + 20 + 2),
]


@pytest.mark.parametrize("layer, logical, nbytes", HAND)
def test_layer_costs_by_hand(layer: LayerBits, logical: int, nbytes: int) -> None:
    assert layer.logical_bits == logical
    assert layer.container_bytes == nbytes


def test_config_totals_by_hand() -> None:
    cfg = BitConfig(layers={"a": HAND[0][0], "b": HAND[2][0]})
    assert cfg.n_params == 512
    assert cfg.avg_bits == pytest.approx((896 + 1024) / 512)  # 3.75: scale overhead included
    assert cfg.container_bytes == 144 + 160
    assert cfg.container_bits_per_weight == pytest.approx(8 * 304 / 512)  # 4.75
    assert cfg.bits_vector() == [3, 3]
    assert "3.750 bits/weight logical, 4.750 container" in cfg.summary()


@pytest.mark.parametrize(
    "bits, scheme, container",
    [
        (4, SYM, Container.INT2),  # [-7, 7] vs [-2, 1]
        (5, SYM, Container.INT4),  # [-15, 15] vs [-8, 7]
        (4, ASYM, Container.INT4),  # [0, 15] vs [-8, 7]
        (2, SYM, Container.UINT2),  # [-1, 1] has negatives
        (3, SYM, Container.UINT8),
        (8, ASYM, Container.INT8),  # [0, 255] vs [-128, 127]
    ],
)
def test_container_that_cannot_hold_is_rejected(bits: int, scheme: Scheme, container: Container) -> None:
    with pytest.raises(ValidationError, match=f"container {container} cannot hold {bits}-bit {scheme}"):
        _layer(bits=bits, scheme=scheme, container=container)


@pytest.mark.parametrize("field, value", [("bits", 9), ("bits", 1), ("block_size", 1), ("out_features", 0)])
def test_layer_field_bounds(field: str, value: int) -> None:
    args = dict(bits=3, scheme=SYM, block_size=None, container=Container.INT8, out_features=4, in_features=4)
    with pytest.raises(ValidationError, match=field):
        LayerBits(**{**args, field: value})


def test_smallest_container_by_hand() -> None:
    assert smallest_container(2, SYM) is Container.INT2
    assert smallest_container(3, SYM) is Container.INT4
    assert smallest_container(4, SYM) is Container.INT4
    assert smallest_container(5, SYM) is Container.INT8
    assert smallest_container(2, ASYM) is Container.UINT2
    assert smallest_container(4, ASYM) is Container.UINT4
    assert smallest_container(8, ASYM) is Container.UINT8


SPECS = [LayerSpec("enc.0.q", 8, 16, 0, "q"), LayerSpec("enc.0.ffn", 32, 16, 0, "ffn")]


def test_config_from_bits_default_and_profile_containers(profiles_dir: Path) -> None:
    cfg = config_from_bits(SPECS, [3, 8])
    assert [lb.container for lb in cfg.layers.values()] == [Container.INT4, Container.INT8]
    assert [(lb.out_features, lb.in_features) for lb in cfg.layers.values()] == [(8, 16), (32, 16)]
    npu = load_profile(profiles_dir / "npu_int8.yaml")  # int8 containers only
    cfg = config_from_bits(SPECS, 4, containers=npu.weights.container_for)
    assert {lb.container for lb in cfg.layers.values()} == {Container.INT8}
    rpi5 = load_profile(profiles_dir / "rpi5.yaml")  # int4 / int8: signed only
    with pytest.raises(BadInputError, match="no allowed container holds 2-bit asymmetric"):
        config_from_bits(SPECS, 2, scheme=ASYM, containers=rpi5.weights.container_for)
    with pytest.raises(ValueError, match="3 bit-widths for 2 layers"):
        config_from_bits(SPECS, [3, 3, 3])


def test_save_load_round_trip(tmp_path: Path) -> None:
    cfg = config_from_bits(SPECS, [2, 5], scheme=ASYM, block_size=16)
    path = tmp_path / "sub" / "config.json"
    cfg.save(path)
    back = BitConfig.load(path)
    assert back == cfg
    assert back.digest() == cfg.digest()
    assert list(back.layers) == list(cfg.layers)  # model order survives
    assert back.layers["enc.0.q"].scheme is ASYM and back.layers["enc.0.q"].container is Container.UINT2
    other = config_from_bits(SPECS, [3, 5], scheme=ASYM, block_size=16)
    assert other.digest() != cfg.digest()


@pytest.mark.parametrize(
    "content, field",
    [
        (b"", "Invalid JSON"),
        (b"\xff\xfe\x00garbage", "Invalid JSON"),
        (b"[1, 2]", "(top level)"),
        (b'{"layers": {}}', "layers"),
        (
            b'{"layers": {"x": {"bits": 9, "container": "int8", "out_features": 1, "in_features": 2}}}',
            "layers.x.bits",
        ),
        (
            b'{"layers": {"x": {"bits": 3, "container": "int9", "out_features": 1, "in_features": 2}}}',
            "layers.x.container",
        ),
        (
            b'{"layers": {"x": {"bits": 4, "container": "int2", "out_features": 1, "in_features": 2}}}',
            "cannot hold 4-bit",
        ),
        (b'{"layers": {}, "extra": 1}', "extra"),
    ],
)
def test_load_bad_file_names_file_and_field(tmp_path: Path, content: bytes, field: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(BadInputError) as info:
        BitConfig.load(path)
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert all(line.startswith(f"{path}: ") for line in info.value.problems)
    assert field in str(info.value)


def test_load_missing_file_and_directory(tmp_path: Path) -> None:
    for path in (tmp_path / "nope.json", tmp_path):
        with pytest.raises(BadInputError, match=f"{path}: cannot read bit config"):
            BitConfig.load(path)


def test_adapter_branch_costs_by_hand():
    """Rank 2 beside a 4 x 64 layer: down (2, 64) and up (4, 2) int8, one fp32 scale per row (2 + 4 rows).
    The model's weights stay 256: bits per weight are per weight of the model."""
    base = BitConfig(layers={"l": _layer()})
    branched = base.model_copy(update={"branch_rank": 2})
    entries, rows = 2 * (64 + 4), 2 + 4
    assert list(branched.stored_layers()) == ["l", "l.branch.down", "l.branch.up"]
    assert branched.n_params == base.n_params == 256
    assert branched.container_bytes == base.container_bytes + entries + 4 * rows
    assert branched.avg_bits * 256 == pytest.approx(base.avg_bits * 256 + 8 * entries + 32 * rows)
    assert branched.branch_bits == pytest.approx((8 * entries + 32 * rows) / 256)
    assert base.branch_bits == 0 and base.branch_layers() == {}


def test_branch_rank_round_trips_and_changes_the_search_key(tmp_path):
    from toolchain.search import quant_key

    base = BitConfig(layers={"l": _layer()})
    branched = base.model_copy(update={"branch_rank": 3})
    branched.save(tmp_path / "c.json")
    assert BitConfig.load(tmp_path / "c.json") == branched
    assert quant_key(branched) != quant_key(base)
    with pytest.raises(ValidationError):
        BitConfig(layers={"l": _layer()}, branch_rank=0)
