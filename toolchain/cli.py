"""The `edgeq` command line: one class per subcommand, each a thin shell over a library call.

Exit codes: 0 ok, 1 internal error, 2 bad input (an unwritable output or a full disk included), 3 validation
failed, 130 interrupted (SIGINT), 143 terminated (SIGTERM), 129 hung up (SIGHUP).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

from toolchain.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_OK,
    STOP,
    EdgeqError,
    Interrupted,
    describe_os_error,
    is_environment_error,
)


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
    from toolchain.cli_commands import STAGE_COMMANDS

    return [ProfilesCommand(), *STAGE_COMMANDS]


def build_parser(commands: list[Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeq",
        description="One fine-tuning run, then a verified, quantized ONNX model for every edge device.",
        epilog="exit codes: 0 ok, 1 internal error, 2 bad input (unwritable output and full disk included), "
        "3 validation failed, 130 interrupted (SIGINT), 143 terminated (SIGTERM), 129 hung up (SIGHUP)",
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
    with signals_interrupt():
        try:
            code = args.handler.run(args)
        except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM as Interrupted: staged outputs are already removed
            return _interrupted(args, exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT))
        except Exception as exc:
            if STOP.signum is not None:  # the signal's Interrupted, turned into this error by code it passed through
                return _interrupted(args, Interrupted(STOP.signum))
            return _failed(args, exc)
        if STOP.signum is not None:  # the signal's Interrupted was swallowed; what was written is complete
            return _interrupted(args, Interrupted(STOP.signum))
        return code


def _interrupted(args: argparse.Namespace, stop: Interrupted) -> int:
    _report(args.command, f"interrupted by {stop.signal_name}", _intact(args))
    return stop.exit_code


def _failed(args: argparse.Namespace, exc: Exception) -> int:
    """Exit code and message for an exception a command raised (no signal involved)."""
    if isinstance(exc, EdgeqError):
        _report(args.command, type(exc).__name__, str(exc).splitlines())
        return exc.exit_code
    if isinstance(exc, OSError) and is_environment_error(exc):
        where = f"{exc.filename}: " if exc.filename else ""
        _report(args.command, "OSError", [f"{where}{describe_os_error(exc)}", ENVIRONMENT_HINT])
        return EXIT_BAD_INPUT
    return _internal_error(args.command, exc)


ENVIRONMENT_HINT = (
    "this is the machine (disk space, permissions, file system), not a bug in edgeq; partial outputs were removed"
)


def _report(command: str, headline: str, lines: list[str]) -> None:
    print(f"edgeq {command}: {headline}:", file=sys.stderr)
    for line in lines:
        print(f"  {line}", file=sys.stderr)


def _intact(args: argparse.Namespace) -> list[str]:
    """What an interrupted command left behind: finished outputs only, and how to finish."""
    out = getattr(args, "out", None)
    if out is None:
        return ["nothing was being written"]
    lines = [f"{out}: only complete outputs are there (earlier ones as they were); partial ones were removed"]
    if args.command in ("train", "build"):
        lines.append("run the same command again to finish: finished training stages are reused, and training")
        lines.append("resumes from its last checkpoint")
    return lines


def _internal_error(command: str, exc: BaseException) -> int:
    traceback.print_exception(exc)
    print(f"edgeq {command}: internal error (a bug in edgeq; please report it)", file=sys.stderr)
    return EXIT_INTERNAL


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM, SIGHUP (the terminal closed) and SIGINT raise Interrupted, which unwinds
    like Ctrl-C: every staging directory and temporary file is removed on the way out and earlier complete
    outputs stay as they were.

    Without this, SIGTERM would kill the process at once (exit 143, no message, staged files left behind).
    Only the first signal raises; a second one during that cleanup is ignored so the cleanup finishes
    (SIGKILL still stops the process at once). A signal the caller chose to ignore (SIG_IGN, as for
    background jobs) stays ignored. Only the main thread can install handlers; elsewhere this does nothing.

    The signal is also recorded in `errors.STOP`, because its Interrupted can be lost: raised inside a
    destructor it is discarded, and an extension it passes through may turn it into its own error. Then
    nothing is published after it (`io.staged_set` checks) and `main` still exits with the signal's code.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    STOP.signum = None  # a new command: earlier in-process commands' signals are not this one's

    def handler(signum: int, frame: object) -> None:
        if STOP.signum is None:
            STOP.signum = signum  # kept even if the Interrupted below is swallowed or converted (StopRequest)
            # the signal may land inside a constructor (a progress bar's, say): that half-built object's
            # destructor then fails while the stack unwinds, or later; noise, not news, once we are stopping,
            # so destructor errors stay muted from here on (the process is about to exit)
            sys.unraisablehook = lambda _: None
            raise Interrupted(signum)

    wanted = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
    if hasattr(signal, "SIGHUP"):  # POSIX; under nohup it is ignored, and stays so
        wanted[signal.SIGHUP] = signal.SIG_DFL
    previous = {sig: signal.getsignal(sig) for sig in wanted}
    installed = [sig for sig, default in wanted.items() if previous[sig] is default]
    for sig in installed:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig in installed:
            signal.signal(sig, previous[sig])
        STOP.signum = None  # library calls after this command publish again
