"""Shared fixtures: a tiny seeded BERT saved once per session and the tiny three-class corpus."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from toolchain.data import TextDataset
from toolchain.testing import tiny_corpus, tiny_model_dir, write_tiny_corpus

REPO_ROOT = Path(__file__).resolve().parent.parent
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


TINY_BUILD_PROFILE = PROFILES_DIR / "rpi5.yaml"
TINY_BUILD_STEPS = "10"


@dataclass(frozen=True)
class TinyBuild:
    """A complete `edgeq build` of one profile on a tiny model: `out` holds a verified package and the run."""

    model: Path
    data: Path
    out: Path

    def args(self, out: Path, seed: int = 0) -> list[str]:
        """`edgeq build` arguments (without the program name) for this model and data into `out`."""
        return [
            "build",
            "--profiles",
            str(TINY_BUILD_PROFILE),
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
    build = TinyBuild(model, write_tiny_corpus(root / "data"), root / "dist")
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
