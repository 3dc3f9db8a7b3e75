"""The stages of a training run, each writing its output atomically into the run directory so that an
interrupted run resumes at the first unfinished stage:

    data.json, settings.json -> float/ (fine-tuned model + tokenizer) -> float_logits.safetensors (teacher
    logits on train, float logits on test) -> base.safetensors (MSE-clipped integers) -> tables.safetensors
    (the embedding tables' integers per table format) -> adapter checkpoints -> adapter.safetensors

A stage's output is always read back from disk before the next stage uses it, so a resumed run computes
from exactly the bytes an uninterrupted one did.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from toolchain.adapter.base import QuantBase
from toolchain.adapter.settings import TrainSettings
from toolchain.adapter.tables import TableBase
from toolchain.data import TextDataset
from toolchain.errors import BadInputError
from toolchain.evaluate import predict_logits
from toolchain.finetune import finetune
from toolchain.io import atomic_write_bytes, atomic_write_json, atomic_write_text, link_or_copy, staged_dir
from toolchain.models import load_model, quantizable_layers

SETTINGS, DATA, FLOAT_DIR, LOGITS, BASE, TABLES, ADAPTER = (
    "settings.json",
    "data.json",
    "float",
    "float_logits.safetensors",
    "base.safetensors",
    "tables.safetensors",
    "adapter.safetensors",
)
TIMINGS = "timings.json"


def dataset_json(ds: TextDataset) -> str:
    """The run's copy of its data. Groups are kept when there are any (the split depends on them); without
    groups the record is what it was before groups existed."""
    record = {"texts": ds.texts, "labels": ds.labels, "ids": ds.ids, "label_names": ds.label_names, "source": ds.source}
    if ds.groups is not None:
        record["groups"] = ds.groups
    return json.dumps(record, ensure_ascii=False)


def read_dataset(path: Path) -> TextDataset:
    d = json.loads(Path(path).read_text(encoding="utf-8"))
    return TextDataset(d["texts"], d["labels"], d["ids"], d["label_names"], d["source"], d.get("groups"))


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
    """Same documents, labels, ids and class names; the `source` label (a path or a name) may differ."""
    old = read_dataset(path)
    return (old.texts, old.labels, old.ids, old.label_names) == (ds.texts, ds.labels, ds.ids, ds.label_names)


def _same_settings(path: Path, settings: TrainSettings) -> bool:
    """The recorded settings equal `settings`; a setting added since the file was written reads as its
    default, which is what the run trained with."""
    try:
        return TrainSettings.model_validate_json(path.read_text(encoding="utf-8")) == settings
    except ValidationError:
        return False


def start_run(run_dir: Path, ds: TextDataset, settings: TrainSettings) -> None:
    """Record settings and data; refuse a directory that holds a run of other settings or data."""
    settings_path, data_path = run_dir / SETTINGS, run_dir / DATA
    text = settings.model_dump_json(indent=2)
    problems = []
    if settings_path.is_file() and not _same_settings(settings_path, settings):
        problems.append(f"{settings_path}: {run_dir} holds a run with other settings")
    if data_path.is_file() and not _same_data(data_path, ds):
        problems.append(f"{data_path}: {run_dir} holds a run with other data")
    if problems:
        raise BadInputError([f"{p}; use a new run directory (or delete this one)" for p in problems])
    if not settings_path.is_file():
        atomic_write_text(settings_path, text)
    if not data_path.is_file():
        atomic_write_text(data_path, dataset_json(ds))


def float_stage(
    run_dir: Path, model_dir: Path, ds: TextDataset, train: TextDataset, s: TrainSettings, progress: bool
) -> None:
    """Fine-tune in float and save model + tokenizer to float/ (skipped when float/ exists)."""
    if (run_dir / FLOAT_DIR).is_dir():
        return
    timer = Timer()
    model, tok = load_model(model_dir, ds.label_names, seed=s.seed)
    bar = tqdm(total=s.float_steps, desc="float fine-tune", disable=not progress, dynamic_ncols=True)

    def on_step(step: int, loss: float) -> None:
        bar.set_postfix(loss=f"{loss:.3f}")
        bar.update(1)

    finetune(
        model,
        tok,
        train,
        steps=s.float_steps,
        batch_size=s.batch_size,
        lr=s.float_lr,
        head_lr=s.head_lr,
        max_length=s.max_length,  # the reference: trained at the length it is evaluated at
        seed=s.seed,
        mode=s.float_mode,
        decay=s.float_decay,
        on_step=on_step,
    )
    bar.close()
    with staged_dir(run_dir / FLOAT_DIR) as stage:
        model.save_pretrained(stage)
        tok.save_pretrained(stage)
    timer.record(run_dir, "float_finetune")


def logits_stage(run_dir: Path, model, tok, splits, s: TrainSettings) -> None:
    """Teacher logits on train (training length) and float logits on test (evaluation length). Validation
    logits are left to `Run.float_logits`, on the documents asked for (a build's search scores 56 of BBC News's 223)."""
    if (run_dir / LOGITS).is_file():
        return
    timer = Timer()
    out = {
        "train": predict_logits(model, tok, splits.train.texts, s.effective_train_length),
        "test": predict_logits(model, tok, splits.test.texts, s.max_length),
    }
    atomic_write_bytes(run_dir / LOGITS, save({k: v.contiguous() for k, v in out.items()}))
    timer.record(run_dir, "float_logits")


def base_stage(run_dir: Path, model, s: TrainSettings, progress: bool) -> None:
    """MSE-clipped integers of every (layer, bits, grid) of the float fine-tuned model."""
    if (run_dir / BASE).is_file():
        return
    timer = Timer()
    bar = tqdm(total=len(s.bits) * len(s.grids), desc="quantized base", disable=not progress, dynamic_ncols=True)
    base = QuantBase.build(model, quantizable_layers(model), s.bits, s.grids, on_entry=lambda: bar.update(1))
    bar.close()
    base.save(run_dir / BASE)
    timer.record(run_dir, "quantized_base")


def tables_stage(run_dir: Path, model, s: TrainSettings, progress: bool) -> None:
    """The integers of every embedding table in every table format the run trains (quantize_table)."""
    if (run_dir / TABLES).is_file():
        return
    timer = Timer()
    formats = trained_formats(s)
    bar = tqdm(total=len(formats), desc="quantized tables", disable=not progress or not formats, dynamic_ncols=True)
    tables = TableBase.build(model, formats, on_entry=lambda: bar.update(1))
    bar.close()
    tables.save(run_dir / TABLES)
    timer.record(run_dir, "quantized_tables")


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
    return load_model(run_dir / FLOAT_DIR, label_names)


def load_logits(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / LOGITS))
