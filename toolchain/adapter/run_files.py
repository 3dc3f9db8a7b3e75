"""A run directory's files: their names, the manifest that seals a finished run, the check that a
directory holds this run (same settings, data and training code), and the readers of each file.

    code.json, settings.json, data.json -> float/ (fine-tuned model + tokenizer) -> float_logits.safetensors
    -> base.safetensors -> tables.safetensors -> checkpoints/ -> adapter.safetensors, run.json
    -> manifest.json (sha256 of every file above, and the training code's hash)

`toolchain.adapter.training` writes them in that order; `toolchain.adapter.run.Run` reads a finished one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from torch import nn

from toolchain.adapter.base import QuantBase
from toolchain.adapter.model import CoAModel
from toolchain.adapter.settings import TrainSettings
from toolchain.adapter.tables import TableBase
from toolchain.data import TextDataset
from toolchain.errors import BadInputError, IntegrityError
from toolchain.integrity import file_problems
from toolchain.io import atomic_write_json, atomic_write_text, link_or_copy, sha256_file, staged_dir
from toolchain.models import LayerSpec, load_model
from toolchain.provenance import closure_hash

CODE, SETTINGS, DATA, FLOAT_DIR, LOGITS, BASE, TABLES, ADAPTER = (
    "code.json",
    "settings.json",
    "data.json",
    "float",
    "float_logits.safetensors",
    "base.safetensors",
    "tables.safetensors",
    "adapter.safetensors",
)
TIMINGS, RUN_JSON, MANIFEST = "timings.json", "run.json", "manifest.json"
FLOAT_ORIGIN = "edgeq_origin.json"  # in float/: fine-tuned here, or the model directory's own classifier
# What a run's files depend on: the training stages and the build's choice of training configurations,
# with every toolchain module they import (toolchain.provenance.closure_hash).
CODE_ROOTS = ("toolchain.adapter.training", "toolchain.build.training")


def code_hash() -> str:
    """The hash of the code that computes a run's files: a run trained by other code is not reused."""
    return closure_hash(CODE_ROOTS)


def dataset_json(ds: TextDataset) -> str:
    """The run's copy of its data. Groups and text pairs are kept when there are any; without them the
    record is what it was before either existed."""
    record = {"texts": ds.texts, "labels": ds.labels, "ids": ds.ids, "label_names": ds.label_names, "source": ds.source}
    if ds.groups is not None:
        record["groups"] = ds.groups
    if ds.text_pairs is not None:
        record["text_pairs"] = ds.text_pairs
    return json.dumps(record, ensure_ascii=False)


def read_dataset(path: Path) -> TextDataset:
    d = json.loads(Path(path).read_text(encoding="utf-8"))
    return TextDataset(
        d["texts"], d["labels"], d["ids"], d["label_names"], d["source"], d.get("groups"), d.get("text_pairs")
    )


class Timer:
    """Wall and CPU seconds of a stage. CPU time (all threads of this process) is what the stage would
    take alone on an idle machine with one thread; wall time includes waiting for a shared CPU."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def record(self, run_dir: Path, stage: str) -> None:
        path = run_dir / TIMINGS
        times = json.loads(path.read_text()) if path.is_file() else {}
        now = {
            "wall_s": round(time.perf_counter() - self.wall, 2),
            "cpu_s": round(time.process_time() - self.cpu, 2),
            "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        }
        atomic_write_json(path, times | {stage: now})


def _same_data(path: Path, ds: TextDataset) -> bool:
    """Same documents (and pairs), labels, ids and class names; the `source` label (a path or a name) may differ."""
    old = read_dataset(path)
    return (old.inputs, old.labels, old.ids, old.label_names) == (ds.inputs, ds.labels, ds.ids, ds.label_names)


def _same_settings(path: Path, settings: TrainSettings) -> bool:
    """The recorded settings equal `settings`; a setting added since the file was written reads as its
    default, which is what the run trained with."""
    try:
        return TrainSettings.model_validate_json(path.read_text(encoding="utf-8")) == settings
    except ValidationError:
        return False


def start_run(run_dir: Path, ds: TextDataset, settings: TrainSettings) -> None:
    """Record the code, settings and data; refuse a directory that holds a run of other code, settings or
    data (resuming it would mix the two)."""
    code_path, settings_path, data_path = run_dir / CODE, run_dir / SETTINGS, run_dir / DATA
    now, problems = code_hash(), []
    if settings_path.is_file() and (recorded := _recorded_code(code_path)) != now:
        which = recorded or "unrecorded (an edgeq older than code hashes)"
        problems.append(f"{code_path}: {run_dir} holds a run of edgeq training code {which}, this edgeq's is {now}")
    if settings_path.is_file() and not _same_settings(settings_path, settings):
        problems.append(f"{settings_path}: {run_dir} holds a run with other settings")
    if data_path.is_file() and not _same_data(data_path, ds):
        problems.append(f"{data_path}: {run_dir} holds a run with other data")
    if problems:
        raise BadInputError([f"{p}; use a new run directory (or delete this one)" for p in problems])
    if not code_path.is_file():
        atomic_write_json(code_path, {"code": now})
    if not settings_path.is_file():
        atomic_write_text(settings_path, settings.model_dump_json(indent=2))
    if not data_path.is_file():
        atomic_write_text(data_path, dataset_json(ds))


def _recorded_code(path: Path) -> str | None:
    try:
        return json.loads(path.read_text())["code"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None


def _manifest_files(run_dir: Path) -> list[Path]:
    fixed = [CODE, SETTINGS, DATA, LOGITS, BASE, TABLES, ADAPTER, RUN_JSON]
    return [run_dir / f for f in fixed] + sorted((run_dir / FLOAT_DIR).iterdir())


def write_manifest(run_dir: Path) -> None:
    """Seal a finished run: the sha256 of each of its files and the training code's hash."""
    files = {str(p.relative_to(run_dir)): sha256_file(p) for p in _manifest_files(run_dir)}
    atomic_write_json(run_dir / MANIFEST, {"code": code_hash(), "files": files})


def verify_manifest(run_dir: Path) -> None:
    """The run was trained by this edgeq's training code (else BadInputError, with the reason) and each file
    in the manifest exists with its recorded sha256 (else IntegrityError, naming each that does not)."""
    path = run_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise IntegrityError([f"{path}: unreadable run manifest: {exc}"]) from exc
    if manifest.get("code") != code_hash():
        raise BadInputError(
            f"{path}: trained by edgeq training code {manifest.get('code')!r}, this edgeq's is {code_hash()}: its "
            "integers may differ from what this code computes; train the run again (`edgeq build` keys its "
            "cached runs by the code and trains a new one)"
        )
    bad = file_problems(run_dir, manifest["files"], path)
    if bad:
        raise IntegrityError(bad)


def trained_formats(s: TrainSettings) -> list:
    """The integer table formats of `s.tables` (None, float tables, has nothing to quantize)."""
    return [t for t in s.tables if t is not None]


def share_float_stages(src: Path, dst: Path) -> None:
    """Seed run directory `dst` with run `src`'s data, float fine-tune and float logits, so that training
    `dst` skips them. Only for runs whose float stage is the same: equal `TrainSettings.float_digest()`
    and training length (a second adapter on the same reference, e.g. an adapter branch). The files are
    hard-linked where the file system allows (the float model is 88 MB on MiniLM), else copied."""
    dst.mkdir(parents=True, exist_ok=True)
    if not (dst / FLOAT_DIR).is_dir():
        with staged_dir(dst / FLOAT_DIR) as stage:
            shutil.copytree(src / FLOAT_DIR, stage, dirs_exist_ok=True, copy_function=link_or_copy)
    for name in (DATA, LOGITS):
        if not (dst / name).is_file():
            link_or_copy(src / name, dst / name)


def load_float(run_dir: Path, label_names: list[str]):
    """The float fine-tuned model and its tokenizer."""
    return load_model(run_dir / FLOAT_DIR, label_names)


def load_logits(run_dir: Path) -> dict[str, torch.Tensor]:
    """The float model's logits: "train" (teacher, training length) and "test" (evaluation length)."""
    return load_file(str(run_dir / LOGITS))


def load_coa(run_dir: Path, model: nn.Module, specs: list[LayerSpec], s: TrainSettings) -> CoAModel:
    """The adapter model over `model` with the run's quantized base and tables, its factors initialised
    (seeded, without touching the caller's RNG); training or `load_trainable_state` fills them."""
    base = QuantBase.load(run_dir / BASE, s.grids, model, specs)
    tables = TableBase.load(run_dir / TABLES, trained_formats(s))
    with torch.random.fork_rng():
        torch.manual_seed(s.seed)
        return CoAModel(model, specs, base, s, tables)
