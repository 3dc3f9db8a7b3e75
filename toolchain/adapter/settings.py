"""TrainSettings: everything that determines a training run's result, versioned and hashed.

Two runs with equal `digest()` (same model, data and seed) produce bit-identical integers; a run directory
records its settings and refuses to resume under different ones.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from toolchain.finetune import FinetuneMode
from toolchain.profiles import EmbeddingQuant
from toolchain.quant.core import Scheme

SETTINGS_VERSION = 2  # 2: float_decay (and mapper) exist; a version-1 record trained without the decay


class Grid(BaseModel):
    """One integer grid family a layer can be quantized on: a scheme and a granularity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scheme: Scheme = Scheme.SYMMETRIC
    block_size: int | None = Field(default=None, ge=2, description="None: one scale per output channel")

    @property
    def key(self) -> str:
        gran = "pc" if self.block_size is None else f"b{self.block_size}"
        return f"{self.scheme.value[:4]}-{gran}"


def _default_grids() -> list[Grid]:
    """What the shipped device profiles ask for: symmetric per-channel and blocks 32/64/128, asymmetric
    per-channel (aggressive_2bit's four-level 2-bit weights)."""
    sym, asym = Scheme.SYMMETRIC, Scheme.ASYMMETRIC
    return [Grid(scheme=sym), Grid(scheme=asym), *(Grid(scheme=sym, block_size=b) for b in (32, 64, 128))]


class DeltaUnits(StrEnum):
    """What one unit of the adapter's output B Q(c) A means (weight units barely move integers: an update
    lands only where it exceeds half a step, docs/onnxruntime.md).

    COARSE_STEP is the default, chosen on validation: on the default model it scored above STEP at every
    budget from 2.25 to 4 bits (bench/adapter_variants.py). STEP and WEIGHT stay as the ablation arms of the
    same training path (bench/adapter_variants.py, bench/adapter_ablation.py, the merge tests); no device
    needs them."""

    STEP = "step"  # one quantization step of the layer's grid at its bit-width (step-size-aware)
    WEIGHT = "weight"  # one unit of weight value, divided by the step to land on the grid (plain LoRA)
    # one step of the layer's grid at the run's lowest bit-width, whatever bits the configuration gives it:
    # the same product is the same weight change at every bit-width (STEP at the lowest), so a 4-bit
    # layer's gradient reaches the shared factors at the scale of a 2-bit one instead of ~1/3 of it
    COARSE_STEP = "coarse-step"


class ForwardMode(StrEnum):
    MERGED = "merged"  # integers W_int + round(delta): what ships, trained straight-through
    BRANCH = "branch"  # side branch over frozen integers: shipped as int8 factors, or merged and rounded (naive)


class ConfigWeighting(StrEnum):
    """How a step's configurations' losses add up (each configuration has its own micro-batch). MEAN is the
    default, chosen on validation: on the default model GEOMETRIC was worse at 2.25 and 2.5 bits there
    (bench/adapter_variants.py). GEOMETRIC stays as an ablation arm, and for a run whose configurations'
    losses differ by orders of magnitude (a wide range of bit-widths), where MEAN lets the lowest dominate."""

    MEAN = "mean"  # as they are: low-bit configurations, whose losses are the largest, pull hardest
    GEOMETRIC = "geometric"  # log of each: every configuration's gradient divided by its own loss


class MapperContext(StrEnum):
    """What one layer's Q(c) sees of the configuration (toolchain.adapter.mapper)."""

    OWN = "own"  # its own bits, granularity and scheme, block index and module type (the authors' mapper)
    WHOLE = "whole"  # that, plus the bits of every layer of the model


class TrainSettings(BaseModel):
    """Float fine-tune + configuration-aware adapter training. Defaults: about 8 minutes on MR, 2 CPU cores."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1, 2] = SETTINGS_VERSION
    seed: int = 0
    max_length: int = Field(default=128, ge=8, description="tokens at evaluation and deployment")
    train_max_length: int | None = Field(
        default=96, ge=8, description="tokens in adapter training and its teacher's logits; None: max_length"
    )
    batch_size: int = Field(default=16, ge=1, description="documents per optimizer step")
    # float fine-tune (the reference and the teacher)
    # 400 steps with a linear decay: on MR's validation split its seed spread was 0.49 points over 5 seeds
    # (100 constant steps, the earlier default: 3.91), bench/suite.py run float-spread
    float_steps: int = Field(default=400, ge=0)
    float_mode: FinetuneMode = FinetuneMode.LORA
    # False (constant rates): what runs of settings version 1 trained with, and what the tests' tiny teacher
    # needs (with the decay it fits the tiny corpus so closely that configurations are indistinguishable)
    float_decay: bool = Field(default=True, description="learning rates fall linearly after the warm-up")
    float_lr: float = Field(default=1e-3, gt=0)
    head_lr: float = Field(default=3e-3, gt=0)
    # configuration-aware adapter
    steps: int = Field(default=200, ge=0)
    rank: int = Field(default=8, ge=1, le=64)
    lr: float = Field(
        default=1e-3, ge=0, description="A, B, the mapper and the head; 0 with residual=False: PEQA, scales only"
    )
    scale_lr: float = Field(default=1e-3, ge=0, description="log-scales (PEQA); 0 keeps the MSE scales")
    alpha: float = Field(default=16.0, gt=0, description="delta = alpha * B Q(c) A, in `units`")
    units: DeltaUnits = DeltaUnits.COARSE_STEP
    residual: bool = Field(default=True, description="round(W_f/s - W_int + delta): boundary-aware start")
    forward: ForwardMode = ForwardMode.MERGED
    configs_per_step: int = Field(default=2, ge=1, description="configurations per step, one micro-batch each")
    weighting: ConfigWeighting = ConfigWeighting.MEAN
    bits: list[int] = Field(default=[2, 3, 4, 5, 6, 7, 8], min_length=1)
    grids: list[Grid] = Field(default_factory=_default_grids, min_length=1)
    tables: list[EmbeddingQuant | None] = Field(
        default_factory=list,
        description="embedding table formats each configuration trains with (one drawn per configuration; "
        "None: float tables); each format learns its own table scales. Empty: float tables throughout",
    )
    distill_weight: float = Field(default=0.5, ge=0, le=1, description="KL to the float teacher vs CE")
    refine_every: int = Field(default=100, ge=1, description="a Pareto round costs ~40 scored configs")
    checkpoint_every: int = Field(default=50, ge=1)
    mapper: bool = Field(
        default=True,
        description="False: Q(c) = I for every configuration, one shared adapter (the CoA-LoRA paper's "
        "Shared-LoRA baseline; measured by bench/compare.py)",
    )
    mapper_context: MapperContext = Field(
        default=MapperContext.OWN,
        description="what a layer's Q(c) sees: its own format and place, or also every layer's bits (WHOLE)",
    )
    embed_dim: int = Field(default=8, ge=1)
    mapper_hidden: int = Field(default=64, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _recorded_before_v2(cls, data):
        """A version-1 record means what that edgeq trained: a float fine-tune without the decay."""
        if isinstance(data, dict) and data.get("version") == 1:
            return {"float_decay": False} | data
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainSettings:
        bad = [b for b in self.bits if not 2 <= b <= 8]
        if bad:
            raise ValueError(f"bits: {bad[0]} is not in 2..8")
        if len({g.key for g in self.grids}) != len(self.grids):
            raise ValueError(f"grids: duplicates in {[g.key for g in self.grids]}")
        if len(set(self.tables)) != len(self.tables):
            raise ValueError("tables: duplicate formats")
        if self.mapper_context is MapperContext.WHOLE and not self.mapper:
            raise ValueError("mapper_context: 'whole' needs the mapper (mapper is false: Q(c) = I)")
        if self.batch_size < self.configs_per_step:
            raise ValueError(f"batch_size {self.batch_size} < configs_per_step {self.configs_per_step}")
        return self

    @property
    def effective_train_length(self) -> int:
        """The adapter trains on documents truncated here: 96 of 128 tokens cuts a fifth of its and its
        teacher's time (OUT/build.json records each stage's). The float fine-tune, the reference, trains at
        max_length: at 96 tokens it lost 2.5 points at 128 (95.73 vs 98.20 % on BBC News, one build each)."""
        return min(self.train_max_length or self.max_length, self.max_length)

    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]

    def float_digest(self) -> str:
        """Hash of what the float stage depends on: runs that share it can share the float model."""
        keys = (
            "version",
            "seed",
            "max_length",
            "batch_size",
            "float_steps",
            "float_mode",
            "float_decay",
            "float_lr",
            "head_lr",
        )
        return hashlib.sha256(self.model_dump_json(include=set(keys)).encode()).hexdigest()[:16]
