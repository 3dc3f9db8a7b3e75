"""Shared pieces of the adapter benchmarks: machine info, runs that share one float stage, metrics.

Several adapter variants are compared on one float fine-tune: `float_stage_run` trains it once (a run with
0 adapter steps) and `seed_run_dir` hard-links (or copies) its float model, logits and quantized base into a new run
directory, whose training then skips those stages (they only depend on TrainSettings.float_digest(),
bits and grids, which `seed_run_dir` checks).
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import torch

from toolchain.adapter import Run, TrainSettings, stages, train
from toolchain.bitconfig import BitConfig
from toolchain.build.branch import BRANCH_RUN_INFIX
from toolchain.data import TextDataset
from toolchain.evaluate import encode, metrics
from toolchain.io import link_or_copy
from toolchain.quant.model import apply_quantized

SHARED = (stages.FLOAT_DIR, stages.LOGITS, stages.BASE, stages.DATA, stages.TIMINGS)


def machine_info(threads: int) -> dict:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "torch": torch.__version__,
        "load_average_at_end": load,
        "git_commit": commit,
    }


def find_run(dist: Path, hint: str = "", *, branch: bool = False) -> Path:
    """The one finished training run of an `edgeq build --out` directory (`hint`: what to do when not one):
    the merged run, or with `branch` the adapter-branch run beside it (toolchain.build.branch)."""
    runs = [
        d
        for d in sorted((dist / ".edgeq").glob("run-*"))
        if Run.is_complete(d) and (BRANCH_RUN_INFIX in d.name) == branch
    ]
    if len(runs) != 1:
        kind = "adapter-branch" if branch else "merged"
        raise SystemExit(f"{dist}/.edgeq: {len(runs)} finished {kind} runs{hint}")
    return runs[0]


def float_stage_run(model_dir: Path, ds: TextDataset, root: Path, settings: TrainSettings) -> Path:
    """A run with 0 adapter steps: float fine-tune, logits and quantized base, reusable by variants."""
    run_dir = root / f"float-{settings.float_digest()}-{settings.model_copy(update={'steps': 0}).digest()}"
    train(model_dir, ds, run_dir, settings.model_copy(update={"steps": 0}), progress=True)
    return run_dir


def seed_run_dir(float_dir: Path, run_dir: Path, settings: TrainSettings) -> None:
    """Put the float stage's outputs into `run_dir` (unless already there): hard links where the file system
    allows (the quantized base alone is 390 MB on MiniLM; training replaces files by rename, never in place,
    so a link cannot change the donor), else copies."""
    donor = TrainSettings.model_validate_json((float_dir / stages.SETTINGS).read_text())
    same = (donor.float_digest(), donor.bits, donor.grids) == (
        settings.float_digest(),
        settings.bits,
        settings.grids,
    )
    if not same:
        raise ValueError(f"{float_dir}: float stage of other settings; cannot seed {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in SHARED:
        src, dst = float_dir / name, run_dir / name
        if dst.exists():
            continue
        if src.is_dir():
            shutil.copytree(src, dst, copy_function=link_or_copy)
        else:
            link_or_copy(src, dst)


def train_variant(
    model_dir: Path, ds: TextDataset, float_dir: Path, run_dir: Path, settings: TrainSettings, **kwargs
) -> tuple[Run, float]:
    """(trained run, wall seconds of this call) for one variant, reusing the float stage."""
    seed_run_dir(float_dir, run_dir, settings)
    t0 = time.perf_counter()
    run = train(model_dir, ds, run_dir, settings, **kwargs)
    return run, time.perf_counter() - t0


def _logits(model, run: Run, texts: list[str], forward=None) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 32):
            inputs = encode(run.tokenizer, texts[i : i + 32], run.settings.max_length)
            out.append(forward(inputs) if forward else model(**inputs).logits)
    return torch.cat(out).float()


def split_of(run: Run, name: str):
    return {"val": run.splits.val, "test": run.splits.test}[name]


def coa_logits(run: Run, config: BitConfig, split: str, rank: int | None = None) -> torch.Tensor:
    """Logits of the shipped integer model of `config` (what `Run.score` measures) on a split."""
    return _logits(run.quantized_model(config, rank), run, split_of(run, split).texts)


def ptq_logits(run: Run, config: BitConfig, split: str) -> torch.Tensor:
    """Logits of the MSE-clipped post-training quantization of the float fine-tuned model (the strongest PTQ
    baseline) on a split."""
    return _logits(apply_quantized(run.float_model(), run.ptq_weights(config)), run, split_of(run, split).texts)


def float_head_logits(run: Run, config: BitConfig, split: str) -> torch.Tensor:
    """Logits of `config`'s shipped integers and scales under the float fine-tune's own head instead of the
    head trained jointly with the adapter."""
    return _logits(apply_quantized(run.float_model(), run.generate(config)), run, split_of(run, split).texts)


def split_metrics(run: Run, logits: torch.Tensor, split: str) -> dict:
    """Accuracy, macro-F1, agreement with and KL from the float model, of logits on a split."""
    return metrics(logits, split_of(run, split).labels, run.float_logits(split)).to_dict()


def coa_metrics(run: Run, config: BitConfig, split: str, rank: int | None = None) -> dict:
    return split_metrics(run, coa_logits(run, config, split, rank), split)


def ptq_metrics(run: Run, config: BitConfig, split: str) -> dict:
    return split_metrics(run, ptq_logits(run, config, split), split)


def paired_test(a: torch.Tensor, b: torch.Tensor, labels: list[int]) -> dict:
    """McNemar's exact test of two classifiers on the same documents: how many documents only `a` classifies
    correctly, how many only `b`, and the two-sided p-value of that split (binomial, p = 1/2) under the
    hypothesis that both are equally accurate."""
    from scipy.stats import binomtest

    y = torch.as_tensor(labels)
    right_a, right_b = a.argmax(-1) == y, b.argmax(-1) == y
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    p = binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
    return {"only_a_right": only_a, "only_b_right": only_b, "p_value": round(float(p), 4)}


def training_forward_metrics(run: Run, config: BitConfig, split: str, rank: int | None = None) -> dict:
    """The training-time forward (for a branch run: the float side adapter, before any rounding)."""
    ds = split_of(run, split)
    model = run.adapter_model

    def forward(inputs):
        model.set_config(config, rank)
        return model(**inputs)

    logits = _logits(None, run, ds.texts, forward)
    return metrics(logits, ds.labels, run.float_logits(split)).to_dict()


def changed_fraction(run: Run, config: BitConfig, rank: int | None = None) -> float:
    """Fraction of integers the adapter moved away from the MSE-clipped base."""
    got, base = run.generate(config, rank), run.ptq_weights(config)
    changed = sum((got[n].q != base[n].q).sum().item() for n in got)
    return changed / sum(q.q.numel() for q in got.values())


def r2(d: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}
