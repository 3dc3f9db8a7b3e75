"""Device profiles: shipped files validate; each malformed case is a BadInputError naming file and field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from toolchain.errors import EXIT_BAD_INPUT, BadInputError
from toolchain.profiles import (
    ActivationQuant,
    DeviceProfile,
    EmbeddingQuant,
    TensorQuant,
    load_profile,
    load_profiles,
    profile_paths,
    standard_ops,
)
from toolchain.quant.containers import Container
from toolchain.quant.core import Scheme

SHIPPED = [
    "aggressive_2bit",
    "mcu_tiny",
    "npu_int8",
    "rpi5",
    "x86_vnni_calibrated",
    "x86_vnni_compact",
    "x86_vnni_server",
]


def _shipped(profiles_dir: Path, name: str) -> dict:
    return yaml.safe_load((profiles_dir / f"{name}.yaml").read_text(encoding="utf-8"))


def _bad(path: Path) -> BadInputError:
    """Load `path`, expect a BadInputError whose every line names the file; return it."""
    with pytest.raises(BadInputError) as info:
        load_profile(path)
    err = info.value
    assert err.exit_code == EXIT_BAD_INPUT == 2
    assert err.problems and all(line.startswith(f"{path}: ") for line in err.problems), err.problems
    return err


# ---- shipped profiles ------------------------------------------------------------------------------


def test_every_shipped_profile_validates(profiles_dir: Path) -> None:
    files = sorted(profiles_dir.glob("*.yaml"))
    assert [f.stem for f in files] == SHIPPED
    profiles = load_profiles([profiles_dir])
    assert [p.name for p in profiles] == SHIPPED
    for p in profiles:
        assert isinstance(p, DeviceProfile)
        assert p.budget.max_avg_bits is not None or p.budget.max_weight_mb is not None or p.budget.max_model_mb
        for c in p.weights.containers:  # docs/onnxruntime.md table: the container runs at the profile's opset
            assert c.min_opset <= p.onnx.opset
        for b in p.weights.bits:
            assert any(p.weights.container_for(b, s) for s in p.weights.schemes)
        assert "DequantizeLinear" in p.onnx.allowed_ops()


def test_shipped_profiles_model_their_devices(profiles_dir: Path) -> None:
    by_name = {p.name: p for p in load_profiles([profiles_dir])}
    npu = by_name["npu_int8"]
    assert npu.onnx.opset == 13 and npu.weights.containers == [Container.INT8]
    assert npu.granularities() == [None] and npu.activations is ActivationQuant.INT8_STATIC
    assert {"QuantizeLinear", "DequantizeLinear"} <= npu.onnx.allowed_ops()
    mcu = by_name["mcu_tiny"]
    assert mcu.budget.max_weight_mb == 5.5 and mcu.head is TensorQuant.INT8
    assert mcu.embeddings == EmbeddingQuant(bits=4, block_size=32) and mcu.embeddings.field_bits == 4
    agg = by_name["aggressive_2bit"]
    assert agg.onnx.opset == 25 and Container.INT2 in agg.weights.containers
    assert agg.weights.container_for(2, Scheme.SYMMETRIC) is Container.INT2
    assert agg.weights.container_for(2, Scheme.ASYMMETRIC) is Container.UINT2
    assert agg.weights.container_for(3, Scheme.ASYMMETRIC) is Container.UINT4
    assert agg.weights.container_for(5, Scheme.SYMMETRIC) is None
    assert agg.budget.max_model_mb == 9.0 and agg.embeddings.scheme is Scheme.ASYMMETRIC
    assert "BitShift" in agg.onnx.allowed_ops()
    assert by_name["npu_int8"].embeddings == EmbeddingQuant(bits=8)  # the `int8` shorthand
    rpi5 = by_name["rpi5"]
    assert rpi5.granularities() == [None, 32, 64, 128]
    assert rpi5.weights.container_for(3, Scheme.SYMMETRIC) is Container.INT4
    assert rpi5.weights.container_for(5, Scheme.SYMMETRIC) is Container.INT8
    x86 = by_name["x86_vnni_server"]
    assert x86.onnx.allowed_ops() == standard_ops(x86.onnx.opset)  # onnxruntime's CPU provider: the standard
    assert not {"CumSum", "Cos", "Sin"} & npu.onnx.allowed_ops()  # the NPU: a short list
    assert x86.activations is ActivationQuant.INT8_DYNAMIC
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= x86.onnx.allowed_ops()
    assert x86.weights.containers == [Container.INT8] and x86.granularities() == [None]
    compact = by_name["x86_vnni_compact"]
    assert compact.activations is ActivationQuant.INT8_DYNAMIC and compact.granularities() == [None]
    assert compact.weights.container_for(3, Scheme.SYMMETRIC) is Container.INT4
    assert compact.weights.container_for(5, Scheme.SYMMETRIC) is Container.INT8
    assert compact.onnx.ort_version >= (1, 23) and "BitShift" in compact.onnx.allowed_ops()


# ---- malformed profiles: each a mutation of a shipped file --------------------------------------------


def _set(dotted: str, value) -> Callable[[dict], None]:
    def mutate(d: dict) -> None:
        *parents, last = dotted.split(".")
        for p in parents:
            d = d[p]
        d[last] = value

    return mutate


def _drop(dotted: str) -> Callable[[dict], None]:
    def mutate(d: dict) -> None:
        *parents, last = dotted.split(".")
        for p in parents:
            d = d[p]
        del d[last]

    return mutate


def _all(*mutations: Callable[[dict], None]) -> Callable[[dict], None]:
    def mutate(d: dict) -> None:
        for m in mutations:
            m(d)

    return mutate


# (case id, shipped base, mutation, substrings the message must contain: field and value)
MALFORMED = [
    ("bits 9", "rpi5", _set("weights.bits", [4, 9]), ["weights.bits: 9 is not one of 2, 3, 4, 5, 6, 7, 8"]),
    ("bits 1", "rpi5", _set("weights.bits", [1]), ["weights.bits: 1 is not one of"]),
    ("empty bits", "rpi5", _set("weights.bits", []), ["weights.bits:", "at least 1 item", "(got [])"]),
    (
        "unknown container",
        "rpi5",
        _set("weights.containers", ["int4", "int3"]),
        ["weights.containers.1:", "(got 'int3')", "'int8', 'uint8', 'int4', 'uint4', 'int2' or 'uint2'"],
    ),
    (
        "int4 at opset 13",
        "rpi5",
        _all(_set("onnx.opset", 13), _drop("weights.block_sizes")),
        ["weights.containers: int4 needs onnx.opset >= 21, got 13 (allowed at 13: int8, uint8)"],
    ),
    (
        "int2 at opset 21",
        "aggressive_2bit",
        _set("onnx.opset", 21),
        [
            "weights.containers: int2 needs onnx.opset >= 25, got 21",
            "weights.containers: uint2 needs onnx.opset >= 25",
        ],
    ),
    (
        "int2 on old onnxruntime",
        "aggressive_2bit",
        _set("onnx.min_onnxruntime", "1.19"),
        ["weights.containers: int2 needs onnx.min_onnxruntime >= 1.24, got 1.19"],
    ),
    (
        "block_sizes at opset 13",
        "rpi5",
        _all(_set("onnx.opset", 13), _set("onnx.min_onnxruntime", "1.16"), _set("weights.containers", ["int8"])),
        ["weights.block_sizes: [32, 64, 128] needs onnx.opset >= 21", "got 13"],
    ),
    (
        "block size not a power of two",
        "rpi5",
        _set("weights.block_sizes", [32, 48]),
        ["weights.block_sizes: 48 is not a power of two >= 16"],
    ),
    (
        "no granularity",
        "npu_int8",
        _set("weights.per_channel", False),
        ["weights: per_channel is false and block_sizes is empty"],
    ),
    (
        "bit-width with no container",
        "rpi5",
        _set("weights.containers", ["int4"]),
        [
            "weights.bits: 5 has no container among weights.containers [int4] for schemes [symmetric]",
            "weights.bits: 8 has no container",
        ],
    ),
    (
        "asymmetric with signed containers only",
        "rpi5",
        _all(_set("weights.schemes", ["asymmetric"]), _set("weights.bits", [4])),
        ["weights.bits: 4 has no container among weights.containers [int4, int8] for schemes [asymmetric]"],
    ),
    ("missing budget", "rpi5", _drop("budget"), ["budget: Field required"]),
    ("empty budget", "rpi5", _set("budget", {}), ["budget: set at least one of max_avg_bits"]),
    (
        "both budgets null",
        "mcu_tiny",
        _set("budget", {"max_avg_bits": None, "max_weight_mb": None}),
        ["budget: set at least one of max_avg_bits (logical, whole model), max_model_mb (file)"],
    ),
    (
        "budget zero",
        "mcu_tiny",
        _set("budget.max_weight_mb", 0),
        ["budget.max_weight_mb:", "greater than 0", "(got 0)"],
    ),
    (
        "budget infinite",
        "mcu_tiny",
        _set("budget.max_weight_mb", float("inf")),
        ["budget.max_weight_mb:", "(got inf)"],
    ),
    (
        "embedding bits 5",
        "rpi5",
        _set("embeddings.bits", 5),
        ["embeddings.bits: Input should be 2, 3, 4 or 8", "(got 5)"],
    ),
    (
        "embedding block not a power of two",
        "rpi5",
        _set("embeddings.block_size", 48),
        ["embeddings.block_size: 48 is not a power of two >= 16"],
    ),
    (
        "8-bit embeddings in blocks",
        "rpi5",
        _set("embeddings", {"bits": 8, "block_size": 32}),
        ["embeddings: 8-bit tables are int8, symmetric, one scale per row"],
    ),
    (
        "packed embeddings without BitShift",
        "rpi5",
        _set("onnx.op_sets", ["transformer", "qdq_weights"]),
        ["embeddings: 4-bit tables need packed_gather in onnx.op_sets"],
    ),
    (
        "embeddings a word",
        "rpi5",
        _set("embeddings", "int4"),
        ["embeddings: Input should be a valid dictionary or instance of EmbeddingQuant", "(got 'int4')"],
    ),
    ("budget nan", "rpi5", _set("budget.max_avg_bits", float("nan")), ["budget.max_avg_bits:", "(got nan)"]),
    ("avg bits above 32", "rpi5", _set("budget.max_avg_bits", 33), ["budget.max_avg_bits:", "(got 33)"]),
    ("missing onnx", "rpi5", _drop("onnx"), ["onnx: Field required"]),
    ("missing accuracy", "rpi5", _drop("accuracy"), ["accuracy: Field required"]),
    ("unknown field", "rpi5", _set("colour", "red"), ["colour: Extra inputs are not permitted (got 'red')"]),
    (
        "unknown nested field",
        "rpi5",
        _set("weights.bitz", [4]),
        ["weights.bitz: Extra inputs are not permitted"],
    ),
    (
        "bits not a list",
        "rpi5",
        _set("weights.bits", "four"),
        ["weights.bits: Input should be a valid list (got 'four')"],
    ),
    (
        "opset a string",
        "rpi5",
        _set("onnx.opset", "twenty"),
        ["onnx.opset:", "valid integer", "(got 'twenty')"],
    ),
    ("opset fractional", "rpi5", _set("onnx.opset", 21.5), ["onnx.opset:", "fractional", "(got 21.5)"]),
    (
        "opset too new",
        "rpi5",
        _set("onnx.opset", 26),
        ["onnx.opset: Input should be less than or equal to 25"],
    ),
    (
        "onnxruntime version a number",
        "rpi5",
        _set("onnx.min_onnxruntime", 1.19),
        ["onnx.min_onnxruntime: Input should be a valid string (got 1.19)"],
    ),
    (
        "onnxruntime version malformed",
        "rpi5",
        _set("onnx.min_onnxruntime", "v1.19"),
        ["onnx.min_onnxruntime:", "(got 'v1.19')"],
    ),
    (
        "per_channel not a bool",
        "rpi5",
        _set("weights.per_channel", "maybe"),
        ["weights.per_channel:", "(got 'maybe')"],
    ),
    (
        "budget a list",
        "rpi5",
        _set("budget.max_avg_bits", [1]),
        ["budget.max_avg_bits: Input should be a valid number"],
    ),
    (
        "unknown op set",
        "rpi5",
        _set("onnx.op_sets", ["transformer", "qdq_weights", "fp8"]),
        ["onnx.op_sets.2:", "(got 'fp8')"],
    ),
    (
        "no qdq_weights",
        "rpi5",
        _set("onnx.op_sets", ["transformer"]),
        ["onnx.op_sets: qdq_weights is required"],
    ),
    ("unknown activations", "rpi5", _set("activations", "int4"), ["activations:", "(got 'int4')"]),
    (
        "int8_static without qdq_activations",
        "npu_int8",
        _set("onnx.op_sets", ["transformer", "qdq_weights"]),
        ["activations: int8_static needs qdq_activations in onnx.op_sets"],
    ),
    ("negative max_drop", "rpi5", _set("accuracy.max_drop", -1), ["accuracy.max_drop:", "(got -1)"]),
    ("name not a string", "rpi5", _set("name", None), ["name: Input should be a valid string (got None)"]),
    ("name with spaces", "rpi5", _set("name", "Rpi 5"), ["name:", "(got 'Rpi 5')"]),
]


@pytest.mark.parametrize("case, base, mutate, expected", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_profile_names_field_and_value(
    tmp_path: Path, profiles_dir: Path, case: str, base: str, mutate, expected: list[str]
) -> None:
    data = copy.deepcopy(_shipped(profiles_dir, base))
    mutate(data)
    path = tmp_path / f"{base}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    err = _bad(path)
    for text in expected:
        assert any(text in line for line in err.problems), (text, err.problems)


def test_cross_field_problems_are_one_line_each(tmp_path: Path, profiles_dir: Path) -> None:
    """Three cross-field problems: three lines, each starting with its field (no '(top level)' blob)."""
    data = _shipped(profiles_dir, "rpi5")
    data["onnx"].update(opset=13)
    data["weights"].update(containers=["int4"], bits=[3, 8])
    path = tmp_path / "rpi5.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    fields = [line.removeprefix(f"{path}: ").split(":")[0] for line in _bad(path).problems]
    assert fields == ["weights.containers", "weights.block_sizes", "weights.bits"]


def test_name_must_match_file_stem(tmp_path: Path, profiles_dir: Path) -> None:
    path = tmp_path / "my_board.yaml"
    path.write_text((profiles_dir / "rpi5.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    err = _bad(path)
    assert err.problems == [f"{path}: name: 'rpi5' must match the file name 'my_board'"]


RAW_CASES = [
    ("empty file", b"", "empty file"),
    ("only a comment", b"# nothing here\n", "empty file"),
    ("non-UTF-8 bytes", b"name: rpi5\ndescription: caf\xe9\n", "not UTF-8 text (byte 27)"),
    ("invalid YAML", b"name: [unclosed\n", "invalid YAML at line 2"),
    ("bad indentation", b"name: rpi5\n  budget: 3\n bits: [\n", "invalid YAML at line"),
    ("top-level list", b"- name: rpi5\n- budget: 3\n", "(top level): expected a mapping of fields, got list"),
    ("top-level string", b"rpi5\n", "(top level): expected a mapping of fields, got str"),
    ("duplicate key", b"name: rpi5\nname: other\n", "invalid YAML at line 2, column 1: duplicate key 'name'"),
    ("python object tag", b"name: !!python/object:builtins.dict {}\n", "could not determine a constructor"),
    ("unbuildable float tag", b"name: !!float abc\n", "invalid YAML: a tagged value cannot be built"),
    ("empty float tag", b"name: !!float ''\n", "invalid YAML: a tagged value cannot be built"),
    ("unbuildable timestamp", b"name: !!timestamp 2020-13-45\n", "a tagged value cannot be built"),
    ("deep nesting", b"name: " + b"[" * 5000 + b"]" * 5000 + b"\n", "invalid YAML: nested too deeply"),
]


@pytest.mark.parametrize("case, content, expected", RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_unreadable_profile_file(tmp_path: Path, case: str, content: bytes, expected: str) -> None:
    path = tmp_path / "rpi5.yaml"
    path.write_bytes(content)
    err = _bad(path)
    assert expected in str(err), err.problems


def test_yaml_tags_are_never_executed(tmp_path: Path) -> None:
    """A full YAML loader would run this command; the safe loader must refuse the tag instead."""
    marker = tmp_path / "pwned"
    path = tmp_path / "rpi5.yaml"
    path.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\n', encoding="utf-8")
    err = _bad(path)
    assert "python/object/apply:os.system" in str(err)
    assert not marker.exists()


def test_anchors_aliases_and_merge_keys_expand(tmp_path: Path, profiles_dir: Path) -> None:
    """An alias stands for its anchor's value (reported expanded); a merge key's explicit keys win."""
    text = (profiles_dir / "rpi5.yaml").read_text(encoding="utf-8")
    text = text.replace("  bits: [3, 4, 5, 6, 8]", "  bits: &bits [3, 4, 5, 6, 8]")
    text += "description_alias_check: *bits\n"
    path = tmp_path / "rpi5.yaml"
    path.write_text(text, encoding="utf-8")
    assert "description_alias_check: Extra inputs are not permitted (got [3, 4, 5, 6, 8])" in str(_bad(path))
    merged = yaml.safe_load((profiles_dir / "rpi5.yaml").read_text(encoding="utf-8"))
    merged["accuracy"] = {"max_drop": 1.5}
    doc = yaml.safe_dump(merged).replace("accuracy:\n  max_drop: 1.5\n", "")
    path.write_text(doc + "accuracy:\n  <<: {max_drop: 9.0}\n  max_drop: 1.5\n", encoding="utf-8")
    assert load_profile(path).accuracy.max_drop == 1.5  # an explicit key overrides the merged one


def test_exponential_alias_document_fails_fast(tmp_path: Path) -> None:
    """'Billion laughs': a 1 KB file whose value expands to 9^9 elements must not hang the error message."""
    lines = ["  l0: &l0 [4, 4, 4, 4, 4, 4, 4, 4, 4]"]
    lines += [f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    path = tmp_path / "rpi5.yaml"
    path.write_text("anchors:\n" + "\n".join(lines) + "\nname: *l8\n", encoding="utf-8")
    err = _bad(path)
    assert max(len(line) for line in err.problems) < 400


def test_missing_and_empty_locations(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such profile file or directory"):
        profile_paths([tmp_path / "nope.yaml"])
    with pytest.raises(BadInputError, match=r"no \*.yaml profiles in this directory"):
        profile_paths([tmp_path])
    with pytest.raises(BadInputError, match="cannot read"):
        load_profile(tmp_path / "absent.yaml")


def test_load_profiles_collects_problems_from_every_file(tmp_path: Path, profiles_dir: Path) -> None:
    good = _shipped(profiles_dir, "rpi5")
    (tmp_path / "rpi5.yaml").write_text(yaml.safe_dump(good), encoding="utf-8")
    bad_bits = copy.deepcopy(good) | {"name": "bad_bits"}
    bad_bits["weights"] = {**good["weights"], "bits": [9]}
    (tmp_path / "bad_bits.yaml").write_text(yaml.safe_dump(bad_bits), encoding="utf-8")
    (tmp_path / "empty.yaml").write_bytes(b"")
    (tmp_path / "tagged.yml").write_bytes(b"name: !!python/name:os.system\n")
    with pytest.raises(BadInputError) as info:
        load_profiles([tmp_path])
    problems = info.value.problems
    assert any(p.startswith(f"{tmp_path / 'bad_bits.yaml'}: weights.bits: 9") for p in problems)
    assert any(p.startswith(f"{tmp_path / 'empty.yaml'}: empty file") for p in problems)
    assert any(p.startswith(f"{tmp_path / 'tagged.yml'}: invalid YAML") for p in problems)
    assert not any("rpi5.yaml" in p for p in problems)
    assert len(problems) == 3


def test_load_profiles_rejects_duplicate_names(tmp_path: Path, profiles_dir: Path) -> None:
    text = (profiles_dir / "rpi5.yaml").read_text(encoding="utf-8")
    (tmp_path / "rpi5.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "rpi5.yml").write_text(text, encoding="utf-8")
    with pytest.raises(BadInputError) as info:
        load_profiles([tmp_path])
    yaml_file, yml_file = tmp_path / "rpi5.yaml", tmp_path / "rpi5.yml"
    assert info.value.problems == [
        f"{yaml_file}: name: duplicate profile name 'rpi5' (also in {yml_file})",
        f"{yml_file}: name: duplicate profile name 'rpi5' (also in {yaml_file})",
    ]
    assert [p.name for p in load_profiles([tmp_path / "rpi5.yaml", profiles_dir / "npu_int8.yaml"])] == [
        "rpi5",
        "npu_int8",
    ]


def test_the_profile_guides_example_is_a_valid_profile(tmp_path):
    """docs/device-profiles.md's example is what a user copies first: it must load as written."""
    guide = (Path(__file__).resolve().parent.parent / "docs" / "device-profiles.md").read_text(encoding="utf-8")
    example = guide.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "my_board.yaml").write_text(example, encoding="utf-8")
    (profile,) = load_profiles([tmp_path / "my_board.yaml"])
    assert profile.name == "my_board" and profile.budget.max_model_mb == 20.0 and profile.weights.bits == [3, 4, 8]
