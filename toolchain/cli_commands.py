"""The pipeline's stages as subcommands: train, quantize, search, export, validate, build."""

from __future__ import annotations

import argparse
from pathlib import Path

from toolchain.cli import Command
from toolchain.errors import EXIT_OK
from toolchain.io import require_writable


def _add_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True, help="run directory written by `edgeq train`")


def count(text: str) -> int:
    """argparse type: an integer >= 1 (a bad value is a usage error, exit 2, naming the flag)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: must be 1 or more")
    return value


def _add_training_inputs(parser: argparse.ArgumentParser, steps_help: str) -> None:
    """--model, --data, --steps and --seed: what `train` and `build` both take."""
    parser.add_argument("--model", type=Path, help="local model directory (default: all-MiniLM-L6-v2)")
    parser.add_argument(
        "--data",
        help="a dataset name (mr, sotu-era, bbc-news; default mr), a CSV/JSONL file (text, label, optional "
        "text_pair, id and group columns) or a folder of class subfolders",
    )
    parser.add_argument("--steps", type=count, help=steps_help)
    parser.add_argument("--seed", type=int, default=0)


class TrainCommand(Command):
    name = "train"
    help = "fine-tune once and train the configuration-aware adapter (checkpoints; resumes when re-run)"

    def add_arguments(self, parser):
        _add_training_inputs(parser, "adapter training steps")
        parser.add_argument("--out", type=Path, required=True, help="run directory to write")
        parser.add_argument("--rank", type=count, help="maximum adapter rank (DyLoRA: every lower rank too)")
        parser.add_argument(
            "--forward",
            choices=["merged", "branch"],
            default="merged",
            help="merged: the adapter merged into the integers (default); branch: frozen integers plus a low-rank "
            "branch, exported as int8 factors for a profile with adapter_branch (a BitConfig with branch_rank)",
        )

    def run(self, args):
        from toolchain.build.training import train_run

        require_writable(args.out, "--out")
        run = train_run(
            args.model, args.data, args.out, steps=args.steps, rank=args.rank, seed=args.seed, forward=args.forward
        )
        print(f"run {run.run_dir}: float test accuracy {run.float_accuracy:.2f} %")
        return EXIT_OK


class QuantizeCommand(Command):
    name = "quantize"
    help = "accuracy in torch of a uniform post-training configuration (no adapter) of a run's float model"

    def add_arguments(self, parser):
        _add_run(parser)
        parser.add_argument("--bits", type=int, nargs="+", required=True, help="uniform bit-width(s), 2..8")
        parser.add_argument("--rounding", choices=["rtn", "mse"], nargs="+", default=["rtn", "mse"])
        parser.add_argument("--block-size", type=count, default=None, help="default: per output channel")

    def run(self, args):
        from toolchain.build.ptq_table import quantize_table

        quantize_table(args.run, args.bits, args.rounding, args.block_size)
        return EXIT_OK


class SearchCommand(Command):
    name = "search"
    help = "best configuration per profile with the trained adapter; writes the front and a plot"

    def add_arguments(self, parser):
        _add_run(parser)
        parser.add_argument("--profile", type=Path, nargs="+", help="profile files or directories (default: all)")
        parser.add_argument("--out", type=Path, required=True, help="JSON file for the selections and the front")
        parser.add_argument("--seed", type=int, default=0)

    def run(self, args):
        from toolchain.adapter import Run
        from toolchain.build.device_search import run_search_profiles, search_run, write_search
        from toolchain.profiles import profiles_or_default

        require_writable(args.out, "--out", directory=False)
        run = Run.load(args.run)
        profiles = run_search_profiles(run, profiles_or_default(args.profile))
        result = search_run(run, profiles, seed=args.seed)
        write_search(result, profiles, args.out)
        for sel in result.selections:
            print(f"{sel.profile}: {sel.config.summary()}, validation accuracy {sel.metrics.accuracy:.2f} %")
        print(f"{result.evaluations} configurations scored in {result.seconds:.1f} s; front and plot in {args.out}")
        return EXIT_OK


class ExportCommand(Command):
    name = "export"
    help = "export, validate and package one device from a trained run"

    def add_arguments(self, parser):
        _add_run(parser)
        parser.add_argument("--profile", type=Path, required=True, help="one profile file")
        parser.add_argument("--bits-config", type=Path, help="BitConfig JSON (default: searched for the profile)")
        parser.add_argument("--out", type=Path, required=True, help="output directory; the package is OUT/<profile>")

    def run(self, args):
        from toolchain.build.export_one import export_device

        require_writable(args.out, "--out")
        result = export_device(args.run, args.profile, args.bits_config, args.out)
        print(f"{result.package}: {result.manifest.status}")
        return EXIT_OK if result.passed else 3


class ValidateCommand(Command):
    name = "validate"
    help = "re-check a package: sha256 of every file against its manifest, then the onnxruntime checks"

    def add_arguments(self, parser):
        parser.add_argument("package", type=Path, help="a package directory OUT/<profile>")
        parser.add_argument("--data", help="dataset holding the manifest's test ids (default: the manifest's)")
        parser.add_argument("--no-latency", action="store_true", help="skip the latency measurement")

    def run(self, args):
        from toolchain.build.revalidate import revalidate

        report = revalidate(args.package, args.data, latency=not args.no_latency)
        print(f"{args.package}: passed" if report.passed else f"{args.package}: FAILED")
        report.raise_if_failed()
        return EXIT_OK


class BuildCommand(Command):
    name = "build"
    help = "train (or reuse the cached run), search, merge, export, validate and package every profile"

    def add_arguments(self, parser):
        parser.add_argument("--profiles", type=Path, nargs="+", help="profile directory or files (default: bundled)")
        _add_training_inputs(parser, "adapter training steps (default: the tuned default)")
        parser.add_argument("--out", type=Path, default=Path("dist"), help="output directory (default: dist)")

    def run(self, args):
        from toolchain.build.pipeline import BuildSettings, build

        build(BuildSettings(args.profiles or [], args.model, args.data, args.out, args.steps, args.seed))
        return EXIT_OK


STAGE_COMMANDS: list[Command] = [
    TrainCommand(),
    QuantizeCommand(),
    SearchCommand(),
    ExportCommand(),
    ValidateCommand(),
    BuildCommand(),
]
