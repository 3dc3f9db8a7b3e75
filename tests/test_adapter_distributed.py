"""Training under `accelerate launch`: a no-op in one process, data-parallel across two CPU processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from toolchain.adapter import Grid, Run, make_config
from toolchain.adapter.distributed import Parallel


def test_single_process_group_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    par = Parallel.detect()
    assert (par.num, par.index, par.is_main) == (1, 0, True)
    assert par.shard([5, 6, 7]) == [5, 6, 7]
    model = torch.nn.Linear(2, 2)
    assert par.wrap(model) is model


def test_shards_split_a_micro_batch_between_processes():
    par = Parallel()
    par.num, par.index = 2, 1
    assert par.shard([0, 1, 2, 3, 4]) == [1, 3]


SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch

    from toolchain.adapter import Grid, train
    from tiny import tiny_corpus, tiny_train_settings  # copied beside this script

    torch.set_num_threads(1)
    root = Path(sys.argv[1])
    settings = tiny_train_settings(steps=20, bits=[2, 3], grids=[Grid()], weighting=sys.argv[2])
    train(root / "model", tiny_corpus(), root / "run", settings, progress=False)
    print("DONE", flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("weighting", ["mean", "geometric"])  # geometric averages each loss over processes
def test_two_cpu_processes_train_one_run(tiny_model_path, tmp_path, weighting):
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if launcher is None:
        pytest.skip("the accelerate launcher is not installed")
    shutil.copytree(tiny_model_path, tmp_path / "model")
    (tmp_path / "train.py").write_text(SCRIPT)
    shutil.copy(Path(__file__).with_name("tiny.py"), tmp_path / "tiny.py")
    cmd = [
        launcher,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(tmp_path / "train.py"),
        str(tmp_path),
        weighting,
    ]
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"} | {"CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("DONE") == 2
    run = Run.load(tmp_path / "run")
    config = make_config(run.specs, [2] * len(run.specs), [Grid()] * len(run.specs))
    assert all(qw.q.min() >= -1 and qw.q.max() <= 1 for qw in run.generate(config).values())
    assert run.score(config, "test").accuracy > 50
