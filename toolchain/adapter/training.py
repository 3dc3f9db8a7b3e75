"""`train(...) -> Run`: a run's stages, in order, each writing its output atomically into the run
directory (toolchain.adapter.run_files), so that an interrupted run resumes at the first unfinished stage:

    float fine-tune (or the model directory's own classifier) -> float logits (teacher on train, reference
    on test) -> quantized base (MSE-clipped integers per layer, bits and grid) -> quantized tables (per
    table format) -> adapter (checkpointed steps, toolchain.adapter.train_loop) -> run.json -> manifest

A stage's output is read back from disk before the next stage uses it, so a resumed run computes from
exactly the bytes an uninterrupted one did.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save
from tqdm.auto import tqdm

from toolchain.adapter import run_files as files
from toolchain.adapter.base import QuantBase
from toolchain.adapter.configs import RandomConfigSource
from toolchain.adapter.distributed import Parallel
from toolchain.adapter.run import Run
from toolchain.adapter.settings import TrainSettings
from toolchain.adapter.tables import TableBase
from toolchain.adapter.train_loop import TrainData, train_adapter
from toolchain.config_source import ConfigSource
from toolchain.data import TextDataset, split
from toolchain.evaluate import metrics, predict_logits
from toolchain.finetune import finetune
from toolchain.io import atomic_write_bytes, atomic_write_json, staged_dir
from toolchain.memory import release_freed, trim_heap
from toolchain.models import LayerSpec, load_checkpoint, quantizable_layers


def train(
    model_dir: Path | str,
    dataset: TextDataset,
    run_dir: Path | str,
    settings: TrainSettings | None = None,
    *,
    config_source: ConfigSource | None = None,
    progress: bool = True,
) -> Run:
    """Float fine-tune, quantized base, configuration-aware adapter; resumes an interrupted `run_dir`.

    `config_source` supplies the training configurations (default: RandomConfigSource over the settings'
    bits and grids). Returns the loaded, verified Run. A `run_dir` of other settings, data or training code
    is refused (BadInputError), never mixed.
    """
    s, run_dir = settings or TrainSettings(), Path(run_dir)
    if (run_dir / files.MANIFEST).is_file():
        files.start_run(run_dir, dataset, s)  # refuses other code, settings or data
        return Run.load(run_dir)
    par = Parallel.detect()  # several processes under `accelerate launch`
    with par.main_first():  # the main process runs (and writes) the float stages, the others read them
        run_dir.mkdir(parents=True, exist_ok=True)
        files.start_run(run_dir, dataset, s)
        splits = split(dataset, s.seed)
        quiet = not (progress and par.is_main)
        float_stage(run_dir, Path(model_dir), dataset, splits.train, s, not quiet)
        release_freed()  # each stage starts from what is alive, not on the last one's free heap
        model, tok = files.load_float(run_dir, dataset.label_names)
        logits_stage(run_dir, model, tok, splits, s)
        base_stage(run_dir, model, s, not quiet)
        release_freed()
        tables_stage(run_dir, model, s, not quiet)
        release_freed()
    specs = quantizable_layers(model)
    source = config_source or RandomConfigSource(specs, s.bits, s.grids)
    coa = files.load_coa(run_dir, model, specs, s)
    teacher = files.load_logits(run_dir)["train"]
    data = TrainData(splits.train, teacher, splits.val, tok, s.effective_train_length)
    timer = files.Timer()
    train_adapter(coa, data, s, source, run_dir, progress, par)
    if par.is_main:
        timer.record(run_dir, "adapter")
        atomic_write_bytes(run_dir / files.ADAPTER, save(coa.trainable_state()))
        sens = getattr(source, "sensitivity", None)
        _write_run_json(run_dir, s, specs, dataset.label_names, None if sens is None else sens.to_dict())
        files.write_manifest(run_dir)
    par.wait()
    del coa, data, model  # the loaded Run holds its own copies
    release_freed()
    return Run.load(run_dir)


def float_stage(
    run_dir: Path, model_dir: Path, ds: TextDataset, train: TextDataset, s: TrainSettings, progress: bool
) -> None:
    """The float reference, saved with its tokenizer to float/ (skipped when float/ exists): the model
    fine-tuned in float, or, when the directory already holds a trained classification head
    (`Checkpoint.fine_tuned`), the directory's own model as it is. float/FLOAT_ORIGIN records which."""
    if (run_dir / files.FLOAT_DIR).is_dir():
        return
    timer = files.Timer()
    ckpt = load_checkpoint(model_dir, ds.label_names, seed=s.seed)
    model, tok = ckpt.model, ckpt.tokenizer
    if not ckpt.fine_tuned:
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
            fresh=ckpt.new_params,
            on_step=on_step,
        )
        bar.close()
    origin = {"fine_tuned_here": not ckpt.fine_tuned, "fresh_params": sorted(ckpt.new_params)}
    with staged_dir(run_dir / files.FLOAT_DIR) as stage:
        model.save_pretrained(stage)
        tok.save_pretrained(stage)
        atomic_write_json(stage / files.FLOAT_ORIGIN, origin)
    timer.record(run_dir, "float_finetune" if origin["fine_tuned_here"] else "float_model_copied")


def logits_stage(run_dir: Path, model, tok, splits, s: TrainSettings) -> None:
    """Teacher logits on train (training length) and float logits on test (evaluation length). Validation
    logits are left to `Run.float_logits`, on the documents asked for (a build's search scores 56 of BBC News's 223)."""
    if (run_dir / files.LOGITS).is_file():
        return
    timer = files.Timer()
    out = {
        "train": predict_logits(model, tok, splits.train.inputs, s.effective_train_length),
        "test": predict_logits(model, tok, splits.test.inputs, s.max_length),
    }
    atomic_write_bytes(run_dir / files.LOGITS, save({k: v.contiguous() for k, v in out.items()}))
    timer.record(run_dir, "float_logits")


def base_stage(run_dir: Path, model, s: TrainSettings, progress: bool) -> None:
    """MSE-clipped integers of every (layer, bits, grid) of the float fine-tuned model."""
    if (run_dir / files.BASE).is_file():
        return
    timer = files.Timer()
    bar = tqdm(total=len(s.bits) * len(s.grids), desc="quantized base", disable=not progress, dynamic_ncols=True)
    # trimmed per entry: the clip search's freed temporaries otherwise stay in the heap around what it keeps
    # (MiniLM, when it kept 0.39 GB of integers: 2.6 GB resident untrimmed, 1.1 GB trimmed, no slower)
    base = QuantBase.build(model, quantizable_layers(model), s.bits, s.grids, on_entry=lambda: _tick(bar))
    bar.close()
    base.save(run_dir / files.BASE)
    timer.record(run_dir, "quantized_base")


def _tick(bar) -> None:
    """One entry of a quantized base or table set done: progress, and its freed temporaries handed back."""
    bar.update(1)
    trim_heap()


def tables_stage(run_dir: Path, model, s: TrainSettings, progress: bool) -> None:
    """The integers of every embedding table in every table format the run trains (quantize_table)."""
    if (run_dir / files.TABLES).is_file():
        return
    timer = files.Timer()
    formats = files.trained_formats(s)
    bar = tqdm(total=len(formats), desc="quantized tables", disable=not progress or not formats, dynamic_ncols=True)
    tables = TableBase.build(model, formats, on_entry=lambda: _tick(bar))
    bar.close()
    tables.save(run_dir / files.TABLES)
    timer.record(run_dir, "quantized_tables")


def _write_run_json(
    run_dir: Path, s: TrainSettings, specs: list[LayerSpec], label_names: list[str], sensitivity: dict | None
) -> None:
    logits = files.load_logits(run_dir)
    test = split(files.read_dataset(run_dir / files.DATA), s.seed).test
    info = {
        "settings_digest": s.digest(),
        "label_names": label_names,
        "specs": [vars(sp) for sp in specs],
        "float_test": metrics(logits["test"], test.labels).to_dict(),
        "float_origin": json.loads((run_dir / files.FLOAT_DIR / files.FLOAT_ORIGIN).read_text()),
        "timings_s": json.loads((run_dir / files.TIMINGS).read_text()),
        "sensitivity": sensitivity,  # what the config source measured during training (None: nothing)
    }
    atomic_write_json(run_dir / files.RUN_JSON, info)
