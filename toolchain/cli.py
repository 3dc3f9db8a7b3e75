"""The `edgeq` command line: one class per subcommand, each a thin shell over a library call.

Exit codes: 0 ok, 1 internal error, 2 bad input, 3 validation failed.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from toolchain.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK, EdgeqError

EXIT_INTERRUPTED = 130


class Command:
    """A subcommand: `name`, `help`, `add_arguments(parser)`, `run(args) -> exit code`."""

    name: str
    help: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


class ProfilesCommand(Command):
    name = "profiles"
    help = "list device profiles as a table, or `profiles check PATH...` to validate files"

    def add_arguments(self, parser):
        parser.add_argument("action", nargs="?", choices=["list", "check"], default="list")
        parser.add_argument("paths", nargs="*", type=Path, help="profile files or directories")

    def run(self, args):
        from toolchain.console import print_profiles
        from toolchain.profiles import default_profiles_dir, load_profiles, profile_paths

        paths = args.paths or [default_profiles_dir()]
        profiles = load_profiles(paths)  # raises BadInputError listing every problem (exit 2)
        if args.action == "check":
            for p in profile_paths(paths):
                print(f"ok  {p}")
            return EXIT_OK
        print_profiles(profiles)
        return EXIT_OK


def _commands() -> list[Command]:
    from toolchain.cli_stages import STAGE_COMMANDS

    return [ProfilesCommand(), *STAGE_COMMANDS]


def build_parser(commands: list[Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeq",
        description="One fine-tuning run, then a verified, quantized ONNX model for every edge device.",
        epilog="exit codes: 0 ok, 1 internal error, 2 bad input, 3 validation failed",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in commands:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(handler=cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(_commands())
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: bad flags are bad input
        return EXIT_OK if exc.code == 0 else EXIT_BAD_INPUT
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return args.handler.run(args)
    except EdgeqError as exc:
        kind = type(exc).__name__
        print(f"edgeq {args.command}: {kind}:", file=sys.stderr)
        for line in str(exc).splitlines():
            print(f"  {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"edgeq {args.command}: interrupted; completed outputs are intact", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        traceback.print_exc()
        print(f"edgeq {args.command}: internal error (a bug in edgeq; please report it)", file=sys.stderr)
        return EXIT_INTERNAL
