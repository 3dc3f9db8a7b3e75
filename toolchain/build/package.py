"""A device package on disk: staged in a temporary directory, hashed, then renamed into place.

Layout of OUT/<profile>/: model.onnx (+ model.onnx.data when large), config.json (the model's
configuration: id2label and label2id in logit order), the tokenizer files (tokenizer.json padding and
truncating as the package was validated), manifest.json, manifest.json.sha256, report.html. A package only
exists under its final name once complete.
"""

from __future__ import annotations

from pathlib import Path

from toolchain.build.manifest import MANIFEST, Manifest, load_manifest
from toolchain.errors import IntegrityError
from toolchain.integrity import file_problems
from toolchain.io import atomic_write_text, sha256_file

MANIFEST_HASH = MANIFEST + ".sha256"


def write_loading_files(root: Path, config, tokenizer, max_length: int) -> None:
    """What the tools people load models with read: config.json (transformers, optimum) and the tokenizer's
    files; a fast tokenizer's tokenizer.json is set to pad to the longest text and truncate at `max_length`,
    so that plain `tokenizers` encodes as validation did (docs/packages.md)."""
    from tokenizers import Tokenizer

    root = Path(root)
    config.save_pretrained(root)
    tokenizer.save_pretrained(root)
    path = root / "tokenizer.json"
    if path.is_file():
        fast = Tokenizer.from_file(str(path))
        fast.enable_truncation(max_length)
        if tokenizer.pad_token is not None:
            fast.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
        atomic_write_text(path, fast.to_str(pretty=True))


def _package_files(root: Path) -> list[Path]:
    """Every file under `root` except the manifest and its hash."""
    return [p for p in sorted(Path(root).rglob("*")) if p.is_file() and p.name not in {MANIFEST, MANIFEST_HASH}]


def hash_files(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` except the manifest and its hash, by relative path."""
    return {str(p.relative_to(root)): sha256_file(p) for p in _package_files(root)}


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Write manifest.json and the sha256 of its bytes (so an edited manifest is detected too)."""
    atomic_write_text(Path(root) / MANIFEST, manifest.model_dump_json(indent=2) + "\n")
    atomic_write_text(Path(root) / MANIFEST_HASH, sha256_file(Path(root) / MANIFEST) + "\n")


def verify_package(root: Path) -> Manifest:
    """Check every file of a package against its manifest; IntegrityError names each bad file."""
    root = Path(root)
    problems = []
    hash_file = root / MANIFEST_HASH
    if not hash_file.is_file():
        problems.append(f"{hash_file}: missing (the manifest cannot be checked)")
    elif hash_file.read_text().strip() != sha256_file(root / MANIFEST):
        problems.append(f"{root / MANIFEST}: sha256 does not match {MANIFEST_HASH}: the manifest was edited")
    manifest = load_manifest(root)
    problems += file_problems(root, manifest.files, root / MANIFEST)
    listed = set(manifest.files)
    problems += [
        f"{p}: not listed in the manifest" for p in _package_files(root) if str(p.relative_to(root)) not in listed
    ]
    if problems:
        raise IntegrityError(problems)
    return manifest
