"""Data parallelism under `accelerate launch` (Hugging Face Accelerate), invisible in a single process.

Launched with several processes, every process draws the same rank and configurations for a step (they
come from (seed, step)) and takes its own share of each micro-batch; DDP averages the gradients. Only the
main process runs the float stages and writes files; the others wait for it. In a single process this is
a no-op, so a plain run stays bit-identical to its resumed self.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn


class Parallel:
    """The process group of this run: `num` processes, this one is `index`."""

    def __init__(self, accelerator=None):
        self.accelerator = accelerator
        self.num = 1 if accelerator is None else accelerator.num_processes
        self.index = 0 if accelerator is None else accelerator.process_index

    @classmethod
    def detect(cls) -> Parallel:
        """Several processes when started by `accelerate launch` (or torchrun), else the no-op group.

        The launcher's WORLD_SIZE decides; without CUDA, Accelerate must be told `cpu=True` to form a
        (gloo) CPU group rather than silently run each process alone.
        """
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        # log-scales of bit-widths a step did not sample get no gradient: DDP must tolerate unused params
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
        return cls(Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp]))

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def shard(self, items: list[int]) -> list[int]:
        return items[self.index :: self.num]

    def wrap(self, model: nn.Module) -> nn.Module:
        """What to call forward on (the DDP wrapper when distributed)."""
        return model if self.accelerator is None else self.accelerator.prepare_model(model)

    def backward(self, loss) -> None:
        if self.accelerator is None:
            loss.backward()
        else:
            self.accelerator.backward(loss)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """`value` averaged over the processes (itself in a single process)."""
        return value if self.accelerator is None else self.accelerator.reduce(value, "mean")

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """The main process runs the body first (writes), then the others (which find the outputs)."""
        if self.accelerator is None:
            yield
        else:
            with self.accelerator.main_process_first():
                yield

    def wait(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
