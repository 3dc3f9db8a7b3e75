"""Periodic training checkpoints: safetensors (adapter, optimizer moments, torch RNG) + versioned JSON.

A checkpoint is a directory `checkpoints/step-NNNNNN/` written through a staging directory (atomic), its
JSON recording the step, the settings digest, the config source's state and the sha256 of its tensors, so
a truncated or edited file is refused rather than resumed from.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from toolchain.errors import BadInputError, IntegrityError
from toolchain.integrity import file_problems
from toolchain.io import atomic_write_json, sha256_file, staged_dir

CHECKPOINT_FORMAT = 1
STATE = "state.safetensors"
META = "checkpoint.json"


@dataclass
class Checkpoint:
    step: int
    params: dict[str, torch.Tensor]
    optimizer: dict  # torch optimizer state_dict
    source_state: dict | None


def _flatten_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], list]:
    tensors = {}
    for idx, st in opt_state["state"].items():
        for k, v in st.items():
            tensors[f"opt/{idx}/{k}"] = torch.as_tensor(v).detach().cpu().clone().contiguous()
    return tensors, opt_state["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("opt/"):
            _, idx, k = key.split("/", 2)
            state.setdefault(int(idx), {})[k] = v
    return {"state": state, "param_groups": groups}


def save_checkpoint(root: Path, ckpt: Checkpoint, settings_digest: str) -> Path:
    """Write `root/checkpoints/step-NNNNNN` atomically, then drop older checkpoints."""
    final = Path(root) / "checkpoints" / f"step-{ckpt.step:06d}"
    opt_tensors, groups = _flatten_optimizer(ckpt.optimizer)
    tensors = {f"param/{k}": v for k, v in ckpt.params.items()} | opt_tensors
    tensors["rng/torch"] = torch.get_rng_state()
    with staged_dir(final) as stage:
        save_file(tensors, str(stage / STATE))
        meta = {
            "format": CHECKPOINT_FORMAT,
            "step": ckpt.step,
            "settings_digest": settings_digest,
            "param_groups": groups,
            "source_state": ckpt.source_state,
            "sha256": sha256_file(stage / STATE),
        }
        atomic_write_json(stage / META, meta)
    for old in final.parent.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    found = sorted(p for p in (Path(root) / "checkpoints").glob("step-*") if (p / META).is_file())
    return found[-1] if found else None


def load_checkpoint(path: Path, settings_digest: str) -> Checkpoint:
    """Read and verify a checkpoint; IntegrityError names a truncated or edited file."""
    meta_path, state_path = Path(path) / META, Path(path) / STATE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise IntegrityError([f"{meta_path}: unreadable checkpoint record: {exc}"]) from exc
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise BadInputError(f"{meta_path}: format {meta.get('format')!r}, this edgeq reads {CHECKPOINT_FORMAT}")
    if meta.get("settings_digest") != settings_digest:
        raise BadInputError(
            f"{meta_path}: written under other TrainSettings ({meta.get('settings_digest')}, "
            f"now {settings_digest}); use a new run directory"
        )
    bad = file_problems(path, {STATE: meta.get("sha256", "")}, meta_path)
    if bad:
        raise IntegrityError(bad)
    try:
        tensors = load_file(str(state_path))
    except SafetensorError as exc:
        raise IntegrityError([f"{state_path}: not a readable safetensors file: {exc}"]) from exc
    torch.set_rng_state(tensors["rng/torch"])
    params = {k.removeprefix("param/"): v for k, v in tensors.items() if k.startswith("param/")}
    return Checkpoint(meta["step"], params, _unflatten_optimizer(tensors, meta["param_groups"]), meta["source_state"])
