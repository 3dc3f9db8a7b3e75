"""The adapter training loop: each step samples a rank (DyLoRA) and a few configurations (one micro-batch
each, gradients accumulated), and minimises CE + KL to the float teacher through the merged-integer forward
(the configurations' losses summed as they are, or their logarithms: `ConfigWeighting`). Each
configuration computes with one of the run's embedding table formats (`table_plan`).

Everything random in a step is a function of (seed, step): the batch (`batch_indices`), the rank, the table
formats and the configurations (a `random.Random` seeded by the step). A checkpoint therefore only needs the trainable
tensors, the optimizer moments and the config source's state for a resumed run to continue exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from toolchain.adapter.checkpoint import Checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint
from toolchain.adapter.distributed import Parallel
from toolchain.adapter.model import CoAModel
from toolchain.adapter.settings import ConfigWeighting, TrainSettings
from toolchain.bitconfig import BitConfig
from toolchain.config_source import ConfigSource
from toolchain.data import TextDataset
from toolchain.errors import BadInputError
from toolchain.evaluate import encode
from toolchain.finetune import batch_indices
from toolchain.profiles import EmbeddingQuant

VAL_BATCH = 32  # documents in the fixed validation batch `refine` scores configurations on


@dataclass(frozen=True)
class TrainData:
    """Training documents, the float teacher's logits on them, and the fixed validation batch."""

    train: TextDataset
    teacher: torch.Tensor  # (N_train, C) float32
    val: TextDataset
    tokenizer: object
    max_length: int

    def inputs(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return encode(self.tokenizer, texts, self.max_length)


def step_plan(settings: TrainSettings, source: ConfigSource, step: int) -> tuple[int, list[BitConfig]]:
    """(rank, configurations) of `step`: DyLoRA samples the rank uniformly in 1..r."""
    rng = random.Random(f"adapter/{settings.seed}/{step}")
    rank = rng.randint(1, settings.rank)
    return rank, source.sample(rng, settings.configs_per_step)


def table_plan(settings: TrainSettings, step: int, k: int) -> list[EmbeddingQuant | None]:
    """The embedding table format of each of `step`'s `k` configurations, drawn uniformly from
    settings.tables (None: float tables, and always None when the run trains no table formats). A stream of
    its own, so the ranks and configurations do not depend on the table formats."""
    if not settings.tables:
        return [None] * k
    rng = random.Random(f"adapter-tables/{settings.seed}/{step}")
    return [rng.choice(settings.tables) for _ in range(k)]


def lr_factor(step: int, steps: int) -> float:
    """Linear warm-up over the first 10 % of steps, then cosine decay to 10 %."""
    warm = max(1, steps // 10)
    if step < warm:
        return (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))


def distill_loss(logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 - w) * CE(labels) + w * KL(teacher || student), both per-document means."""
    ce = nn.functional.cross_entropy(logits, labels)
    if weight == 0:
        return ce
    kl = nn.functional.kl_div(logits.log_softmax(-1), teacher.log_softmax(-1), log_target=True, reduction="batchmean")
    return (1 - weight) * ce + weight * kl


def config_weight(loss: torch.Tensor, weighting: ConfigWeighting, par: Parallel) -> torch.Tensor | float:
    """Factor on one configuration's loss: 1, or (GEOMETRIC) 1 / the loss itself, detached and averaged
    over processes, so that the step descends the sum of the log-losses (the geometric loss strategy of
    multi-task learning): a 4-bit configuration already close to its teacher pulls as hard, relative to its
    loss, as a 2-bit one."""
    if weighting is ConfigWeighting.MEAN:
        return 1.0
    return 1.0 / par.mean(loss.detach()).clamp_min(1e-6)


def train_step(
    model: CoAModel,
    data: TrainData,
    settings: TrainSettings,
    source: ConfigSource,
    step: int,
    par: Parallel | None = None,
    net: torch.nn.Module | None = None,
) -> float:
    """Forward and backward of every configuration of `step` on its own micro-batch; returns the mean loss.

    Under several processes (`par`), each takes its share of every micro-batch and `net` (the DDP wrapper
    of `model`) averages gradients.
    """
    par = par or Parallel()
    net = model if net is None else net
    rank, configs = step_plan(settings, source, step)
    tables = table_plan(settings, step, len(configs))
    idx = batch_indices(len(data.train), settings.batch_size, settings.seed, step)
    chunks = [par.shard(idx[i :: len(configs)]) for i in range(len(configs))]
    labels = torch.as_tensor(data.train.labels)
    total = 0.0
    for config, table, chunk in zip(configs, tables, chunks):
        model.set_config(config, rank, table)
        logits = net(**data.inputs([data.train.inputs[i] for i in chunk]))
        dev = logits.device
        loss = distill_loss(logits, labels[chunk].to(dev), data.teacher[chunk].to(dev), settings.distill_weight)
        par.backward(loss * config_weight(loss, settings.weighting, par) * len(chunk) * par.num / len(idx))
        total += loss.item() * len(chunk) * par.num / len(idx)
    return total


def validation_scorer(model: CoAModel, data: TrainData) -> Callable[[BitConfig], float]:
    """score(config): CE of `config` at full rank on the first VAL_BATCH validation documents."""
    texts, labels = data.val.inputs[:VAL_BATCH], torch.as_tensor(data.val.labels[:VAL_BATCH])
    inputs = data.inputs(texts)

    @torch.no_grad()
    def score(config: BitConfig) -> float:
        model.set_config(config)
        logits = model(**inputs)
        return nn.functional.cross_entropy(logits, labels.to(logits.device)).item()

    return score


def _resume(model: CoAModel, opt: torch.optim.Optimizer, source: ConfigSource, run_dir: Path, digest: str) -> int:
    path = latest_checkpoint(run_dir)
    if path is None:
        return 0
    ckpt = load_checkpoint(path, digest)
    model.load_trainable_state(ckpt.params, str(path))
    opt.load_state_dict(ckpt.optimizer)
    if ckpt.source_state is not None and hasattr(source, "load_state_dict"):
        source.load_state_dict(ckpt.source_state)
    return ckpt.step


def _checkpoint(
    model: CoAModel, opt: torch.optim.Optimizer, source: ConfigSource, run_dir: Path, step: int, digest: str
) -> None:
    state = source.state_dict() if hasattr(source, "state_dict") else None
    save_checkpoint(run_dir, Checkpoint(step, model.trainable_state(), opt.state_dict(), state), digest)


def train_adapter(
    model: CoAModel,
    data: TrainData,
    settings: TrainSettings,
    source: ConfigSource,
    run_dir: Path,
    progress: bool = True,
    par: Parallel | None = None,
) -> None:
    """Train `model` in place for settings.steps, resuming from the last checkpoint in `run_dir`.

    Under `accelerate launch` (`par` with several processes) only the main process writes checkpoints.
    """
    par = par or Parallel()
    if settings.batch_size // settings.configs_per_step < par.num:
        raise BadInputError(
            f"batch_size {settings.batch_size} / configs_per_step {settings.configs_per_step} leaves fewer "
            f"documents per micro-batch than the {par.num} processes"
        )
    net = par.wrap(model)  # once: DDP broadcasts the parameters and hooks their gradients
    opt = torch.optim.Adam(model.param_groups(settings))
    base_lrs = [g["lr"] for g in opt.param_groups]
    start = _resume(model, opt, source, run_dir, settings.digest())
    quiet = not (progress and par.is_main)
    bar = tqdm(total=settings.steps, initial=start, desc="adapter", disable=quiet, dynamic_ncols=True)
    score = validation_scorer(model, data)
    for step in range(start, settings.steps):
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr * lr_factor(step, settings.steps)
        opt.zero_grad(set_to_none=True)
        loss = train_step(model, data, settings, source, step, par, net)
        opt.step()
        done = step + 1
        if done % settings.refine_every == 0 and done < settings.steps:
            source.refine(done, score)
        if (done % settings.checkpoint_every == 0 or done == settings.steps) and par.is_main:
            _checkpoint(model, opt, source, run_dir, done, settings.digest())
        bar.set_postfix(loss=f"{loss:.3f}")
        bar.update(1)
    bar.close()
