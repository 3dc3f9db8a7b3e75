"""Property tests of the profile loader: any document gives a valid DeviceProfile or a BadInputError.

Random and mutated YAML (wrong types, missing and unknown fields, out-of-range bits, opset/container
mismatches, huge numbers, anchors, aliases, tags, random bytes): every problem line must start with the
file's path, and no other exception may escape (the CLI would print a traceback instead of exit 2).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolchain.errors import BadInputError
from toolchain.profiles import DeviceProfile, load_profile

PROFILES_DIR = Path(__file__).resolve().parent.parent / "device_profiles"
SHIPPED = {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(PROFILES_DIR.glob("*.yaml"))}

FIELDS = [
    "name", "description", "budget", "budget.max_avg_bits", "budget.max_weight_mb", "weights", "weights.bits",
    "weights.containers", "weights.schemes", "weights.per_channel", "weights.block_sizes", "onnx",
    "onnx.opset", "onnx.min_onnxruntime", "onnx.op_sets", "onnx.extra_ops", "activations", "embeddings",
    "adapter_branch", "accuracy", "accuracy.max_drop",
]  # fmt: skip
WORDS = [
    "int8", "uint8", "int4", "uint4", "int2", "uint2", "int3", "symmetric", "asymmetric", "transformer",
    "qdq_weights", "qdq_activations", "none", "int8_static", "float", "1.19", "1.24", "yes", "~", "",
]  # fmt: skip
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2, 3, 4, 8, 9, 13, 21, 25, 26, 32, 33, -1, 10**400, -(10**400)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(WORDS),
)
values = st.recursive(
    scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), kids, max_size=4)
    ),
    max_leaves=10,
)
# values aimed at the cross-field checks, so that some mutants stay valid and others just miss
targeted = st.one_of(
    st.lists(st.integers(-2, 12), max_size=5),
    st.lists(st.sampled_from(WORDS[:7]), max_size=4, unique=True),
    st.integers(0, 30),
    st.lists(st.sampled_from([0, 1, 16, 24, 32, 64, 128, 4096]), max_size=3),
    st.lists(st.sampled_from(["transformer", "qdq_weights", "qdq_activations"]), max_size=3),
)


def _set(doc: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        if not isinstance(doc.get(p), dict):
            doc[p] = {}
        doc = doc[p]
    doc[last] = value


def _delete(doc: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        doc = doc.get(p)
        if not isinstance(doc, dict):
            return
    doc.pop(last, None)


edits = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(FIELDS), values),
    st.tuples(st.just("set"), st.sampled_from(FIELDS), targeted),
    st.tuples(st.just("set"), st.sampled_from(FIELDS) | st.text(min_size=1, max_size=8), scalars),  # unknown keys
    st.tuples(st.just("delete"), st.sampled_from(FIELDS), st.none()),
)


def _mutated_text(base: str, ops: list[tuple]) -> str:
    doc = copy.deepcopy(SHIPPED[base])
    for kind, field, value in ops:
        if "." not in field and field not in FIELDS:
            field = f"weights.{field}"  # an unknown nested key
        (_set if kind == "set" else _delete)(doc, field, *([value] if kind == "set" else []))
    return yaml.safe_dump(doc, default_flow_style=None, sort_keys=False, allow_unicode=True)


# text-level edits of a dumped document: tags, anchors/aliases, byte damage
TAGS = ["!!python/object:os.system", "!!python/name:os.system", "!custom", "!!binary", "!!set", "!!str",
        "!!int", "!!float", "!!timestamp", "!!map", "!!omap", "!!null"]  # fmt: skip


def _tag_a_field(text: str, field: str, tag: str) -> str:
    return re.sub(rf"^(\s*{field}:) ", rf"\1 {tag} ", text, count=1, flags=re.M)


def _alias_a_field(text: str, field: str, anchored: str) -> str:
    """Define an anchor on a side field and make `field`'s value an alias of it."""
    text = re.sub(rf"^(\s*{field}:) .*$", r"\1 *shared", text, count=1, flags=re.M)
    return f"x_anchor: &shared {anchored}\n" + text


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz_profiles")


def _check(path: Path, content: bytes) -> DeviceProfile | None:
    """The property: a valid profile, or BadInputError whose every line starts with the file's path."""
    path.write_bytes(content)
    try:
        profile = load_profile(path)
    except BadInputError as exc:
        assert exc.exit_code == 2
        assert exc.problems
        for line in exc.problems:
            assert line.startswith(f"{path}: "), line
            assert len(line) < 1000, line
        return None
    assert isinstance(profile, DeviceProfile) and profile.name == path.stem
    b = profile.budget
    assert b.max_avg_bits is not None or b.max_weight_mb is not None or b.max_model_mb is not None
    assert all(c.min_opset <= profile.onnx.opset for c in profile.weights.containers)
    assert all(any(profile.weights.container_for(b, s) for s in profile.weights.schemes) for b in profile.weights.bits)
    return profile


@pytest.mark.parametrize("base", sorted(SHIPPED))
def test_unmutated_shipped_profiles_load(fuzz_dir: Path, base: str) -> None:
    text = _mutated_text(base, [])
    assert _check(fuzz_dir / f"{base}.yaml", text.encode()) is not None


@SETTINGS
@given(base=st.sampled_from(sorted(SHIPPED)), ops=st.lists(edits, min_size=1, max_size=4))
def test_mutated_profiles(fuzz_dir: Path, base: str, ops: list[tuple]) -> None:
    _check(fuzz_dir / f"{base}.yaml", _mutated_text(base, ops).encode("utf-8"))


@SETTINGS
@given(
    base=st.sampled_from(sorted(SHIPPED)),
    ops=st.lists(edits, max_size=2),
    field=st.sampled_from(["name", "budget", "max_avg_bits", "bits", "containers", "opset", "onnx", "accuracy"]),
    how=st.sampled_from(["tag", "alias"]),
    tag=st.sampled_from(TAGS),
    anchored=st.sampled_from(["[4, 8]", "{max_drop: 1.0}", "21", "rpi5", "{<<: {max_drop: 2}}", "*shared", "&x [*x]"]),
)
def test_tags_and_aliases(fuzz_dir: Path, base: str, ops: list, field: str, how: str, tag: str, anchored: str) -> None:
    text = _mutated_text(base, ops)
    text = _tag_a_field(text, field, tag) if how == "tag" else _alias_a_field(text, field, anchored)
    _check(fuzz_dir / f"{base}.yaml", text.encode("utf-8"))


@SETTINGS
@given(
    base=st.sampled_from(sorted(SHIPPED)),
    at=st.floats(0, 1),
    junk=st.binary(min_size=1, max_size=12),
    damage=st.sampled_from(["splice", "truncate", "overwrite", "utf16"]),
)
def test_byte_damage(fuzz_dir: Path, base: str, at: float, junk: bytes, damage: str) -> None:
    raw = _mutated_text(base, []).encode("utf-8")
    i = int(at * len(raw))
    content = {
        "splice": raw[:i] + junk + raw[i:],
        "truncate": raw[:i],
        "overwrite": raw[:i] + junk + raw[i + len(junk) :],
        "utf16": raw.decode().encode("utf-16"),
    }[damage]
    _check(fuzz_dir / f"{base}.yaml", content)


@SETTINGS
@given(doc=values | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), values, max_size=8))
def test_random_documents(fuzz_dir: Path, doc) -> None:
    _check(fuzz_dir / "random.yaml", yaml.safe_dump(doc, allow_unicode=True).encode("utf-8"))


@SETTINGS
@given(content=st.binary(max_size=300) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_random_bytes(fuzz_dir: Path, content: bytes) -> None:
    _check(fuzz_dir / "bytes.yaml", content)
