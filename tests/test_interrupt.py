"""Interrupted and failing writes lose nothing: SIGINT/SIGTERM, a full disk, an unwritable output directory.

The end-to-end cases start a real `python -m toolchain build` on the tiny model, wait (by polling the output
directory) until it is training or packaging, signal it, then check what it left: the exit code and message,
no staging directory or temporary file, no package that looks complete but is not, and the previous complete
build untouched, byte for byte. The mechanism itself (handlers, staged renames, ENOSPC) is tested in-process.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from toolchain.adapter import run_files
from toolchain.adapter.run_files import MANIFEST as RUN_MANIFEST
from toolchain.build import pipeline
from toolchain.build.package import verify_package
from toolchain.cli import main, signals_interrupt
from toolchain.errors import (
    EXIT_BAD_INPUT,
    EXIT_HUNG_UP,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    Interrupted,
    WriteError,
)
from toolchain.io import atomic_write_bytes, link_or_copy, recover_staged_sets, staged_dir, staged_set

PROFILE = "rpi5"  # the one profile of the tiny build (conftest.TINY_BUILD_PROFILE)
EXIT_FOR = {signal.SIGINT: EXIT_INTERRUPTED, signal.SIGTERM: EXIT_TERMINATED, signal.SIGHUP: EXIT_HUNG_UP}
LEFTOVER_SUFFIXES = (".partial", ".tmp", ".old")


# ---- helpers -------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _terminal_signal_dispositions():
    """SIGINT, SIGTERM and SIGHUP as in a terminal. A suite started in the background (CI, nohup, `&`) inherits
    SIGINT (and under nohup SIGHUP) ignored, which edgeq rightly keeps ignored, and so would every build these
    tests start."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a Python handler: children start at SIG_DFL
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _files(root: Path, *, skip_state: bool = True) -> dict[str, str]:
    """sha256 of every file under `root` by relative path (the cached runs in .edgeq left out by default)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not (skip_state and p.relative_to(root).parts[0] == pipeline.STATE_DIR)
    }


def _leftovers(root: Path) -> list[Path]:
    """Staging directories, temporary files and swapped-out packages anywhere under `root`."""
    return [p for p in root.rglob(".*") if p.name.endswith(LEFTOVER_SUFFIXES)]


def _runs(out: Path) -> set[Path]:
    return set((out / pipeline.STATE_DIR).glob("run-*/"))


def _staged_packages(out: Path) -> list[Path]:
    """Packages being written: inside the build's staged set of outputs (toolchain.io.staged_set)."""
    return list((out / pipeline.STATE_DIR).glob(f".outputs.*.partial/.{PROFILE}.*.partial"))


def _copy_build(tiny_build, dest: Path) -> Path:
    return Path(shutil.copytree(tiny_build.out, dest, symlinks=True))


class Build:
    """`python -m toolchain build ...` in a subprocess, stderr to a file (no pipe to fill and block on)."""

    def __init__(self, args: list[str], log: Path):
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "toolchain", *args], stdout=subprocess.DEVNULL, stderr=err
            )

    def stderr(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace").replace("\r", "\n")

    def wait_for(self, what: str, found: Callable[[], object], timeout: float = 300) -> object:
        """Poll `found()` until it is truthy; fail if edgeq exits first (then the point was missed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if result := found():
                return result
            if self.proc.poll() is not None:
                pytest.fail(f"edgeq exited {self.proc.returncode} before {what}:\n{self.stderr()[-3000:]}")
            time.sleep(0.01)  # the polling interval; the condition is what synchronises
        self.proc.kill()
        pytest.fail(f"no {what} within {timeout} s:\n{self.stderr()[-3000:]}")

    def interrupt(self, sig: signal.Signals, timeout: float = 120) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def _assert_interrupted(build: Build, code: int, sig: signal.Signals, out: Path) -> None:
    err = build.stderr()
    assert code == EXIT_FOR[sig], err[-3000:]
    assert f"edgeq build: interrupted by {sig.name}:" in err
    assert f"{out}: only complete outputs are there" in err
    assert "Traceback" not in err
    assert _leftovers(out) == [], "a staging directory or temporary file was left behind"


# ---- real builds, really signalled ----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_signal_during_training_keeps_the_previous_build(tiny_build, tmp_path, capsys, sig):
    """A second build (another seed, so it trains) into a complete OUT: the lock turns a third build away
    while it runs; the signal stops it mid-training; every file of the first build is unchanged."""
    out = _copy_build(tiny_build, tmp_path / "dist")
    before, runs_before, pkg_inode = _files(out), _runs(out), (out / PROFILE).stat().st_ino
    build = Build(tiny_build.args(out, seed=1), tmp_path / "stderr.txt")
    new_run = build.wait_for("the second run directory", lambda: _runs(out) - runs_before)  # lock taken
    assert main(tiny_build.args(out, seed=2)) == EXIT_BAD_INPUT  # a concurrent build into the same OUT
    run_dir = next(iter(new_run))
    assert "another edgeq build is writing here" in capsys.readouterr().err
    code = build.interrupt(sig)
    _assert_interrupted(build, code, sig, out)
    assert not (run_dir / RUN_MANIFEST).exists(), "the signal arrived after training had finished"
    assert _files(out) == before and (out / PROFILE).stat().st_ino == pkg_inode
    verify_package(out / PROFILE)


@pytest.mark.slow  # trains twice (interrupted, then resumed): over a minute on 2 cores
def test_rerun_after_an_interrupt_resumes_and_completes(tiny_build, tmp_path):
    """SIGTERM once the quantized base is written; the same command again reuses the finished float stage
    (same directory, not retrained) and replaces the old package with a complete, verified new one."""
    out = _copy_build(tiny_build, tmp_path / "dist")
    old_manifest, runs_before = (out / PROFILE / "manifest.json").read_bytes(), _runs(out)
    args = tiny_build.args(out, seed=1)
    build = Build(args, tmp_path / "stderr.txt")
    run_dir = build.wait_for(
        "the quantized base", lambda: next((r for r in _runs(out) - runs_before if (r / run_files.BASE).exists()), None)
    )
    float_inode = (run_dir / run_files.FLOAT_DIR).stat().st_ino
    _assert_interrupted(build, build.interrupt(signal.SIGTERM), signal.SIGTERM, out)
    assert (out / PROFILE / "manifest.json").read_bytes() == old_manifest
    assert main(args) == EXIT_OK
    assert (run_dir / RUN_MANIFEST).is_file() and (run_dir / run_files.FLOAT_DIR).stat().st_ino == float_inode
    manifest = verify_package(out / PROFILE)
    assert (out / PROFILE / "manifest.json").read_bytes() != old_manifest  # the seed-1 model replaced it
    assert manifest.bit_config is not None and _leftovers(out) == []


RESUME_STEPS = "130"  # a refine round (step 100) and checkpoints at 50 and 100 before the end
RUN_INDEPENDENT = ("validation.json", "report.html", "manifest.json", "manifest.json.sha256")  # hold latency


def _steps(args: list[str], steps: str) -> list[str]:
    return [steps if prev == "--steps" else a for prev, a in zip(["", *args], args)]


@pytest.mark.slow  # three tiny builds of 130 steps
def test_killed_mid_training_then_rerun_gives_the_uninterrupted_package(tiny_build, tmp_path):
    """SIGTERM after the step-100 checkpoint (which holds the refined training set), then the same command:
    the package equals an uninterrupted build's, file by file (sha256); files that record latency are
    compared on everything but the latency."""
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main(_steps(tiny_build.args(whole), RESUME_STEPS)) == EXIT_OK
    args = _steps(tiny_build.args(resumed), RESUME_STEPS)
    build = Build(args, tmp_path / "stderr.txt")
    ckpt = "checkpoints/step-000100/checkpoint.json"
    run_dir = build.wait_for(
        "the step-100 checkpoint", lambda: next((r for r in _runs(resumed) if (r / ckpt).exists()), None)
    )
    _assert_interrupted(build, build.interrupt(signal.SIGTERM), signal.SIGTERM, resumed)
    assert not (run_dir / RUN_MANIFEST).exists(), "the signal arrived after training had finished"
    assert main(args) == EXIT_OK
    a, b = _files(whole / PROFILE), _files(resumed / PROFILE)
    assert a.keys() == b.keys()
    assert {k: v for k, v in a.items() if k not in RUN_INDEPENDENT} == {
        k: v for k, v in b.items() if k not in RUN_INDEPENDENT
    }
    ma, mb = verify_package(whole / PROFILE), verify_package(resumed / PROFILE)
    assert ma.model_dump(exclude={"latency", "files"}) == mb.model_dump(exclude={"latency", "files"})


@pytest.mark.parametrize(
    "sig, previous",
    [(signal.SIGTERM, True), (signal.SIGINT, False)],
    ids=["SIGTERM-over-a-package", "SIGINT-into-an-empty-out"],
)
def test_signal_during_packaging_leaves_no_partial_package(tiny_build, tmp_path, sig, previous):
    """The run is cached, so the build goes straight to search and packaging; the signal lands while the
    package is staged. The previous package stays (same directory, same bytes); without one, none appears,
    and the same command run again completes it."""
    out = _copy_build(tiny_build, tmp_path / "dist")
    if not previous:
        for p in out.iterdir():
            if p.name != pipeline.STATE_DIR:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    before = _files(out / PROFILE) if previous else None
    inode = (out / PROFILE).stat().st_ino if previous else None
    build = Build(tiny_build.args(out), tmp_path / "stderr.txt")
    build.wait_for("a staged package", lambda: _staged_packages(out))
    code = build.interrupt(sig)
    _assert_interrupted(build, code, sig, out)
    if previous:
        assert (out / PROFILE).stat().st_ino == inode and _files(out / PROFILE) == before
        verify_package(out / PROFILE)
    else:
        assert not (out / PROFILE).exists(), "an interrupted build left a package directory"
        assert not (out / "summary.json").exists()
        assert main(tiny_build.args(out)) == EXIT_OK
        verify_package(out / PROFILE)
        assert _leftovers(out) == []


def test_interrupt_once_a_package_is_written_keeps_the_whole_previous_build(monkeypatch, tiny_build, tmp_path):
    """Before the build's outputs were swapped in together, this interrupt left a mixed OUT: the new
    package in place beside the previous summary, index and build record. Now every file is the previous
    build's, and nothing staged is left."""
    out = _copy_build(tiny_build, tmp_path / "dist")
    before = _files(out)
    real_package = pipeline.package_device

    def package_then_terminate(*args, **kwargs):
        result = real_package(*args, **kwargs)
        assert (result.package / "manifest.json").is_file()  # complete, in the staged set
        os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(pipeline, "package_device", package_then_terminate)
    assert main(tiny_build.args(out)) == EXIT_TERMINATED
    assert _files(out) == before and _leftovers(out) == []


# ---- the same guarantees in-process: handlers, staged renames, a full disk --------------------------------------


def _fake_build(monkeypatch, body: Callable[[object], None]) -> None:
    """Make `edgeq build` run `body(settings)` instead of the pipeline (the CLI around it is the real one)."""
    monkeypatch.setattr(pipeline, "build", body)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_signal_unwinds_through_staged_dir(monkeypatch, tmp_path, capsys, sig):
    final = tmp_path / "out" / PROFILE
    final.mkdir(parents=True)
    (final / "model.onnx").write_bytes(b"previous")
    cleanup_finished = []

    def body(settings) -> None:
        try:
            with staged_dir(final) as stage:
                (stage / "model.onnx").write_bytes(b"half")
                os.kill(os.getpid(), sig)  # the handler raises at the next bytecode
                pytest.fail("the signal did not interrupt the build")
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # a second signal during cleanup is ignored
            cleanup_finished.append(True)

    _fake_build(monkeypatch, body)
    assert main(["build", "--out", str(tmp_path / "out")]) == EXIT_FOR[sig]
    err = capsys.readouterr().err
    assert f"interrupted by {sig.name}" in err and "Traceback" not in err
    assert cleanup_finished == [True]
    assert (final / "model.onnx").read_bytes() == b"previous" and _leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers only while main() runs
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_an_extension_turns_into_another_error_still_exits_as_interrupted(monkeypatch, tmp_path, capsys):
    """safetensors' load_file, signalled mid-read, reports a ValueError instead of our Interrupted; that
    used to exit 1 with a traceback and "internal error"."""

    def body(settings) -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            pytest.fail("the signal did not interrupt the build")
        except Interrupted as exc:
            raise ValueError("could not determine the shape of object type 'torch.storage.UntypedStorage'") from exc

    _fake_build(monkeypatch, body)
    assert main(["build", "--out", str(tmp_path / "out")]) == EXIT_TERMINATED
    err = capsys.readouterr().err
    assert "interrupted by SIGTERM" in err and "internal error" not in err and "Traceback" not in err


def test_a_swallowed_signal_publishes_nothing_and_exits_as_interrupted(monkeypatch, tmp_path, capsys):
    """An Interrupted raised inside a destructor is discarded and the work goes on; the recorded signal
    still stops the staged outputs from being published, and the command exits with the signal's code."""
    out = _previous_out(tmp_path)
    before = _files(out)

    def body(settings) -> None:
        with staged_set(out, out / pipeline.STATE_DIR) as stage:
            with contextlib.suppress(Interrupted):  # what a destructor does with it
                os.kill(os.getpid(), signal.SIGHUP)
            _stage_new(stage)

    _fake_build(monkeypatch, body)
    assert main(["build", "--out", str(out)]) == EXIT_HUNG_UP
    assert "interrupted by SIGHUP" in capsys.readouterr().err
    assert _files(out) == before and _leftovers(out) == []
    with staged_set(out, out / pipeline.STATE_DIR) as stage:  # the next command (or library call) publishes
        _stage_new(stage)
    assert (out / "summary.json").read_text() == "new"


def test_an_ignored_sigterm_stays_ignored(monkeypatch, tmp_path):
    def body(settings) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    _fake_build(monkeypatch, body)
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        assert main(["build", "--out", str(tmp_path / "out")]) == EXIT_OK
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_staged_swap_cut_between_its_renames_restores_the_previous(monkeypatch, tmp_path):
    final = tmp_path / PROFILE
    final.mkdir()
    (final / "model.onnx").write_bytes(b"previous")
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the old package is already moved aside; the new one not yet in
            raise KeyboardInterrupt
        real_replace(src, dst)

    with pytest.raises(KeyboardInterrupt), staged_dir(final) as stage:
        (stage / "model.onnx").write_bytes(b"new")
        monkeypatch.setattr(os, "replace", replace)
    monkeypatch.undo()
    assert calls[1] == final
    assert (final / "model.onnx").read_bytes() == b"previous" and _leftovers(tmp_path) == []


def _previous_out(root: Path) -> Path:
    """An OUT with an earlier build's package and summary, and an entry no build writes."""
    out = root / "dist"
    (out / PROFILE).mkdir(parents=True)
    (out / PROFILE / "model.onnx").write_bytes(b"old")
    (out / "summary.json").write_text("old")
    (out / "notes.txt").write_text("the user's")
    return out


def _stage_new(stage: Path) -> None:
    (stage / PROFILE).mkdir()
    (stage / PROFILE / "model.onnx").write_bytes(b"new")
    (stage / "summary.json").write_text("new")
    (stage / "index.html").write_text("new")  # no earlier build wrote one


NEW = {f"{PROFILE}/model.onnx", "summary.json", "index.html"}


def test_staged_set_swaps_its_entries_in_together(tmp_path):
    out = _previous_out(tmp_path)
    with staged_set(out, out / pipeline.STATE_DIR) as stage:
        _stage_new(stage)
        assert (out / "summary.json").read_text() == "old" and not (out / "index.html").exists()
    assert {k: (out / k).read_text() for k in NEW} == dict.fromkeys(NEW, "new")
    assert (out / "notes.txt").read_text() == "the user's" and _leftovers(out) == []


def test_staged_set_interrupted_while_written_leaves_every_entry_as_it_was(tmp_path):
    out = _previous_out(tmp_path)
    before = _files(out)
    with pytest.raises(KeyboardInterrupt), staged_set(out, out / pipeline.STATE_DIR) as stage:
        _stage_new(stage)
        raise KeyboardInterrupt
    assert _files(out) == before and _leftovers(out) == []


@pytest.mark.parametrize("cut", range(1, 6))  # the swap's 5 renames: 2 old entries aside, 3 new ones in
def test_staged_set_cut_during_its_swap_restores_the_previous(monkeypatch, tmp_path, cut):
    out = _previous_out(tmp_path)
    before = _files(out)
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == cut:
            raise KeyboardInterrupt
        real_replace(src, dst)

    with pytest.raises(KeyboardInterrupt), staged_set(out, out / pipeline.STATE_DIR) as stage:
        _stage_new(stage)
        monkeypatch.setattr(os, "replace", replace)
    monkeypatch.undo()
    assert _files(out) == before and not (out / "index.html").exists() and _leftovers(out) == []


@pytest.mark.parametrize("killed_after", range(0, 6))
def test_a_swap_killed_outright_is_finished_by_the_next_recovery(tmp_path, killed_after):
    """SIGKILL after `killed_after` of the swap's renames (replayed by stopping the swap without its
    rollback): the next build's recovery moves the rest in, so OUT holds the whole new set."""
    out = _previous_out(tmp_path)
    state = out / pipeline.STATE_DIR
    stage = state / ".outputs.k.partial"
    stage.mkdir(parents=True)
    _stage_new(stage)
    aside = stage.with_suffix(".old")
    aside.mkdir()
    renames = [(out / n, aside / n) for n in (PROFILE, "summary.json")]
    renames += [(stage / n, out / n) for n in ("index.html", PROFILE, "summary.json")]
    for src, dst in renames[:killed_after]:
        os.replace(src, dst)
    (state / ".outputs.w.partial").mkdir()  # another build, killed while still writing its outputs
    (state / ".outputs.w.partial" / "summary.json").write_text("half")
    recover_staged_sets(out, state)
    assert {k: (out / k).read_text() for k in NEW} == dict.fromkeys(NEW, "new")
    assert (out / "notes.txt").read_text() == "the user's" and _leftovers(out) == []


def test_a_write_error_in_a_staged_set_names_the_final_path(monkeypatch, tmp_path):
    out = _previous_out(tmp_path)
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(WriteError) as info, staged_set(out, out / pipeline.STATE_DIR) as stage:
        atomic_write_bytes(stage / "summary.json", b"new")
    assert info.value.path == out / "summary.json" and (out / "summary.json").read_text() == "old"


def test_an_error_reading_another_file_in_a_staged_set_is_not_called_a_write_error(tmp_path):
    out = _previous_out(tmp_path)
    unreadable = OSError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / "data.csv"))
    with pytest.raises(OSError) as info, staged_set(out, out / pipeline.STATE_DIR):
        raise unreadable
    assert info.value is unreadable and _leftovers(out) == []


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_atomic_write_on_a_full_disk_keeps_the_old_file(monkeypatch, tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("old")
    monkeypatch.setattr(os, "fsync", _enospc)  # the data is in the temporary file; the disk refuses it
    with pytest.raises(WriteError) as info:
        atomic_write_bytes(path, b"new" * 1000)
    assert str(info.value) == f"{path}: cannot write: No space left on device [ENOSPC]; it was left as it was before"
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert path.read_text() == "old" and list(tmp_path.iterdir()) == [path]


def _cross_device(*args, **kwargs):
    raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))


@pytest.mark.parametrize("link", [True, False], ids=["linked", "copied across file systems"])
def test_a_shared_file_stays_as_it_was_when_the_other_path_is_rewritten(monkeypatch, tmp_path, link):
    src, dst = tmp_path / "a", tmp_path / "b"
    src.write_bytes(b"float model")
    if not link:
        monkeypatch.setattr(os, "link", _cross_device)
    link_or_copy(src, dst)
    assert dst.read_bytes() == b"float model"
    assert (os.stat(src).st_ino == os.stat(dst).st_ino) is link  # a link copies nothing
    atomic_write_bytes(dst, b"retrained")  # how edgeq rewrites a file: by rename
    assert src.read_bytes() == b"float model"


def test_full_disk_while_packaging_is_a_clear_error_and_keeps_the_package(monkeypatch, tiny_build, tmp_path, capsys):
    """A real (cached-run) build whose writes inside the staged package hit ENOSPC: exit 2, the package's
    path and the reason on stderr, no traceback, the previous package and every other file unchanged."""
    out = _copy_build(tiny_build, tmp_path / "dist")
    before, inode = _files(out), (out / PROFILE).stat().st_ino
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if f"/.{PROFILE}." in os.readlink(f"/proc/self/fd/{fd}"):  # in the package's staging directory
            _enospc()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert main(tiny_build.args(out)) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"edgeq build: WriteError:\n  {out / PROFILE}: cannot write: No space left on device [ENOSPC]" in err
    assert "Traceback" not in err
    assert _files(out) == before and (out / PROFILE).stat().st_ino == inode and _leftovers(out) == []
    verify_package(out / PROFILE)


@pytest.mark.parametrize(
    "exc, code, shown",
    [
        (OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/ro/dist"), EXIT_BAD_INPUT, "Read-only file system"),
        (OSError(errno.EBADF, os.strerror(errno.EBADF)), 1, "internal error (a bug in edgeq"),
    ],
    ids=["environment", "bug"],
)
def test_os_errors_from_the_machine_are_bad_input_others_bugs(monkeypatch, capsys, exc, code, shown):
    def body(settings) -> None:
        raise exc

    _fake_build(monkeypatch, body)
    assert main(["build"]) == code
    err = capsys.readouterr().err
    assert shown in err
    assert ("Traceback" in err) == (code != EXIT_BAD_INPUT)
    if code == EXIT_BAD_INPUT:
        assert "/mnt/ro/dist: Read-only file system [EROFS]" in err


class _HalfBuilt:
    """Signals itself inside its constructor, so its destructor meets a half-built object (as tqdm's did)."""

    def __init__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        self.pos = 0

    def __del__(self):
        self.pos  # noqa: B018  AttributeError when the constructor was cut short


def test_destructor_noise_after_an_interrupt_stays_muted(monkeypatch, capsys):
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # restored after the test
    with pytest.raises(Interrupted), signals_interrupt():
        _HalfBuilt()
    assert "Exception ignored" not in capsys.readouterr().err
