"""Wall time of the training stage with the product defaults (TrainSettings()) on MiniLM / BBC News.

Trains into `--run` (or, if that run is already complete, only reads it) and writes each stage's wall and
CPU seconds and the load average at its end (others' jobs share these 2 cores: wall time is only
meaningful when the load average stays near the thread count).

    python bench/adapter_timing.py --run /tmp/edgeq-default/run2 --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from adapter_common import machine_info

from toolchain.adapter import Run, TrainSettings, run_files, train
from toolchain.data import load_dataset
from toolchain.io import atomic_write_json
from toolchain.models import default_model_path

RESULTS = Path(__file__).resolve().parent / "results" / "adapter_timing.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0, c0 = time.perf_counter(), time.process_time()
    fresh = not Run.is_complete(args.run)
    run = train(default_model_path(), load_dataset(), args.run, TrainSettings()) if fresh else Run.load(args.run)
    entry = {
        "run": str(args.run),
        "threads": args.threads,
        "settings": run.settings.model_dump(mode="json"),
        "stages": json.loads((args.run / run_files.TIMINGS).read_text()),
        "float_test": run.info["float_test"],
        "this_call": {
            "trained": fresh,
            "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(time.process_time() - c0, 1),
        },
        "machine": machine_info(args.threads),
    }
    runs = json.loads(args.out.read_text()) if args.out.is_file() else {}
    atomic_write_json(args.out, runs | {str(args.run): entry})
    print(json.dumps(entry["stages"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
