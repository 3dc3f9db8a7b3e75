"""Run the README's build command verbatim in a fresh clone and time it, installation included.

This is the measurement behind the README's "under 15 minutes on a new machine" line: clones the repository
at HEAD into `--work`, runs the block between the `build-command` markers with bash (a new `.venv`, `pip
install`, `edgeq build`), and writes the whole command's wall time, its exit code, the build's own
`build.json` and each device's status to `--out`. `readme_assets.py` reads it; nobody types the number.
Run it on an otherwise idle machine: on 2 shared cores another job's threads slow every stage.

    python bench/fresh_clone_build.py --work /tmp/edgeq-fresh [--out bench/results/fresh_clone_build.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from record import git_commit, provenance

from toolchain.data import DEFAULT_DATA
from toolchain.io import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "fresh_clone_build.json"


def readme_block(readme: Path, marker: str) -> str:
    """The command between `<!-- marker -->` and `<!-- /marker -->`, without its code fence."""
    m = re.search(rf"<!-- {marker} -->\n```\n(.*?)\n```\n<!-- /{marker} -->", readme.read_text(encoding="utf-8"), re.S)
    if m is None:
        raise SystemExit(f"{readme}: no {marker} block")
    return m.group(1).strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="clone here (must not exist)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.work.exists():
        raise SystemExit(f"--work {args.work}: already exists; give a new directory")
    if (git_commit(ROOT) or "").endswith("+dirty"):  # the clone gets HEAD, not the uncommitted changes
        raise SystemExit(f"{ROOT}: uncommitted changes to tracked files; commit them so the clone measures them")
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(args.work)], check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=args.work, capture_output=True, text=True, check=True
    ).stdout.strip()
    command = readme_block(args.work / "README.md", "build-command")
    print(f"+ {command}", flush=True)
    log = args.work / "build-command.log"
    t0 = time.perf_counter()
    with log.open("w", encoding="utf-8") as f:
        # a new machine has no data cache either: the build fetches its dataset as a new user's would
        env = os.environ | {"EDGEQ_CACHE": str(args.work / ".edgeq-cache")}
        rc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command], cwd=args.work, stdout=f, stderr=f, env=env
        ).returncode
    wall = time.perf_counter() - t0
    dist = args.work / "dist"
    build = json.loads((dist / "build.json").read_text()) if (dist / "build.json").is_file() else None
    summary = json.loads((dist / "summary.json").read_text()) if (dist / "summary.json").is_file() else {}
    result = {
        "command": command,
        "commit": commit,
        "exit_code": rc,
        "command_wall_s": round(wall, 1),
        "build": build,
        "devices": {d["profile"]["name"]: d["status"] for d in summary.get("devices", [])},
        "dist": str(dist),
        "log": str(log),
        "provenance": provenance(
            __file__, data=DEFAULT_DATA, seeds=[0], chosen_on="val", reported_on="test", threads=2
        ),
    }
    atomic_write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("commit", "exit_code", "command_wall_s", "devices")}, indent=2))
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
