"""Shared fixtures: a tiny seeded BERT saved once per session and the tiny three-class corpus.

The tests import their scaffolding by name: `tiny` (tiny models, data and settings) from here, and from
bench/ the search's toy problem and baselines (`search_toy`, `search_baselines`, `spread_source`), which the
search benches use too.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tiny import tiny_corpus, tiny_model_dir, write_tiny_corpus

from toolchain.data import TextDataset

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO_ROOT / "bench"))  # after site-packages: a bench module never shadows an installed one
PROFILES_DIR = REPO_ROOT / "device_profiles"


@pytest.fixture(scope="session", autouse=True)
def _few_threads() -> None:
    """The test machines are shared 2-core boxes: never let torch take more."""
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny BERT (hidden 32, 2 layers) + tokenizer directory, loadable with load_model."""
    return tiny_model_dir(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def tiny_data() -> TextDataset:
    """Three classes, 40 short documents each."""
    return tiny_corpus()


@pytest.fixture(scope="session")
def profiles_dir() -> Path:
    return PROFILES_DIR


TINY_BUILD_PROFILE = "rpi5"
TINY_BUILD_STEPS = "10"
# The searched layers' bits the shipped budgets give MiniLM; on a tiny model the fp32 biases and norms
# weigh 10-30 times more per parameter, so tests rescale each whole-model budget to give its layers these.
LAYER_BITS = {
    "aggressive_2bit": 2.5,
    "npu_int8": 6.0,
    "rpi5": 4.25,
    "x86_vnni_calibrated": 4.25,
    "x86_vnni_compact": 4.25,
    "x86_vnni_server": 8.5,
}


def profiles_for_model(
    model_dir: Path, dst: Path, names: list[str] | None = None, layer_bits=None, max_drop: float | None = None
) -> Path:
    """The shipped profiles (or `names` of them) written to `dst`, each `max_avg_bits` replaced by the
    whole-model bits that leave the model's searched layers `layer_bits[name]` (default LAYER_BITS), and
    with `max_drop`, every accuracy tolerance set to it."""
    import yaml

    from toolchain.models import load_model, quantizable_layers
    from toolchain.profiles import load_profile
    from toolchain.whole_model import OutsideParams, outside_cost

    model, _ = load_model(model_dir, ["a", "b", "c"])
    outside = OutsideParams.of_model(model, quantizable_layers(model))
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(PROFILES_DIR.glob("*.yaml")):
        if names is not None and path.stem not in names:
            continue
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        bits = (layer_bits or LAYER_BITS).get(path.stem)
        if bits is not None and data["budget"].get("max_avg_bits") is not None:
            cost = outside_cost(outside, load_profile(path))
            whole = (cost.logical_bits + bits * outside.layer_params) / outside.n_params
            data["budget"]["max_avg_bits"] = round(whole + 5e-5, 4)  # rounded up: the layers keep `bits`
        if max_drop is not None:
            data["accuracy"]["max_drop"] = max_drop
        (dst / path.name).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return dst


def run_readme_snippet(package: Path, texts: list) -> dict:
    """Execute the README's "Using a package" code, as a user copies it, on `package` and `texts` (strings,
    or (text, text_pair) tuples); returns the names it defined (`logits` among them)."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- package-snippet -->")[1].split("<!-- /package-snippet -->")[0]
    code = block.split("```python\n")[1].split("```")[0]
    for line in ('package = "dist/x86_vnni_server"', "texts = ["):
        assert line in code, f"the README snippet no longer has {line!r}"
    code = code.replace('package = "dist/x86_vnni_server"', f"package = {str(package)!r}")
    code = re.sub(r"^texts = \[.*\]$", "texts = test_texts", code, flags=re.M)
    scope = {"test_texts": texts}
    exec(compile(code, "README.md (package-snippet)", "exec"), scope)
    return scope


@dataclass(frozen=True)
class TinyBuild:
    """A complete `edgeq build` of one profile on a tiny model: `out` holds a verified package and the run."""

    model: Path
    data: Path
    out: Path
    profiles: Path  # TINY_BUILD_PROFILE's file, its budget rescaled for the tiny model

    def args(self, out: Path, seed: int = 0) -> list[str]:
        """`edgeq build` arguments (without the program name) for this model and data into `out`."""
        return [
            "build",
            "--profiles",
            str(self.profiles),
            "--model",
            str(self.model),
            "--data",
            str(self.data),
            "--out",
            str(out),
            "--steps",
            TINY_BUILD_STEPS,
            "--seed",
            str(seed),
        ]


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory: pytest.TempPathFactory) -> TinyBuild:
    """One complete build (seed 0), shared by the interruption and bad-input tests; copy `out` before changing it."""
    from toolchain.cli import main

    root = tmp_path_factory.mktemp("tiny_build")
    model = tiny_model_dir(root / "model", max_positions=128)  # the latency check feeds 128-token inputs
    # 24 test texts: one text is 4.2 points, more than rpi5's 1.5-point tolerance; the tests using this
    # build are about its mechanics (interruption, bad input), so one flipped text must not fail it
    profiles = profiles_for_model(model, root / "profiles", [TINY_BUILD_PROFILE], max_drop=10.0)
    profile = profiles / f"{TINY_BUILD_PROFILE}.yaml"
    build = TinyBuild(model, write_tiny_corpus(root / "data"), root / "dist", profile)
    code = main(build.args(build.out))
    assert code == 0, f"the tiny reference build exited {code}"
    return build


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices: a second thread only adds synchronisation (10x slower on a busy 2-core box).
    A module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
