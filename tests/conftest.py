"""Shared fixtures: a tiny seeded BERT saved once per session and the tiny three-class corpus."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from toolchain.data import TextDataset
from toolchain.testing import tiny_corpus, tiny_model_dir

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
