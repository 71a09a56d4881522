"""What a batch classifies: every file of a folder, the paths a manifest lists, the members of a .zip/.tar
archive (read in place through imgclf.data.archive's checks, never extracted), or the objects under an
fsspec URL prefix (memory://, file://, and s3:// or gs:// where s3fs or gcsfs is installed).

Each input is named by a key (a path relative to the folder, the manifest's line, the member name, the
object's path) and read as bytes, or as a `Rejected` with a reason: a file over the size cap is never read
whole, an unreadable or missing one is a row, not a crash. Keys are unique and sorted, so every shard
plan over the same input is the same.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from imgclf.data.archive import ArchiveError, is_archive, iter_members

MANIFEST_SUFFIXES = (".csv", ".txt", ".lst")
PATH_COLUMNS = ("path", "file", "filepath", "filename", "image")
TOO_LARGE, UNREADABLE = "too_large", "unreadable"


class BatchInputError(ValueError):
    """The input as a whole cannot be listed (missing, empty, malformed manifest, refused archive)."""


@dataclass(frozen=True)
class Rejected:
    """An input that was not classified: `reason` (a decode reason of imgclf.data.decode, or too_large /
    unreadable) and what was found."""

    reason: str
    detail: str


class InputSource(BaseModel):
    """A listed input: its kind, where it is, and the sorted keys of its files."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["folder", "manifest", "archive", "prefix"]
    location: str
    files: tuple[str, ...]


def list_inputs(location: str | Path) -> InputSource:
    """The input at `location`, listed. Raises BatchInputError naming the problem."""
    text = str(location).strip()
    if not text:
        raise BatchInputError("no batch input given: name a folder, manifest, archive or bucket prefix (--input)")
    if "://" in text and not text.startswith("file://"):
        return _source("prefix", text, _list_prefix(text))
    path = Path(text.removeprefix("file://")).expanduser().resolve()
    if path.is_dir():
        return _source("folder", str(path), (p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()))
    if not path.is_file():
        raise BatchInputError(f"batch input {path} does not exist")
    if is_archive(path):
        try:
            return _source("archive", str(path), (name for name, _ in iter_members(path)))
        except ArchiveError as exc:
            raise BatchInputError(f"batch input archive refused: {exc}") from None
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return _source("manifest", str(path), _manifest_entries(path))
    raise BatchInputError(
        f"batch input {path} is neither a folder, a manifest ({', '.join(MANIFEST_SUFFIXES)}) nor an archive"
    )


def _source(kind: str, location: str, keys: Iterable[str]) -> InputSource:
    files = tuple(sorted(set(keys)))
    if not files:
        raise BatchInputError(f"batch input {location} holds no files")
    return InputSource(kind=kind, location=location, files=files)


def _manifest_entries(path: Path) -> list[str]:
    """A CSV's path column (path, file, filepath, filename or image; else the first), or one path a line
    of a text file (blank lines and # comments skipped)."""
    if path.suffix.lower() != ".csv":
        lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
        return [line for line in lines if line and not line.startswith("#")]
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or not rows[0]:
        raise BatchInputError(f"manifest {path} is empty")
    header = [cell.strip().lower() for cell in rows[0]]
    column = next((header.index(name) for name in PATH_COLUMNS if name in header), None)
    if column is None:
        raise BatchInputError(f"manifest {path} has no path column (one of {', '.join(PATH_COLUMNS)})")
    return [row[column].strip() for row in rows[1:] if len(row) > column and row[column].strip()]


def _filesystem(url: str):
    try:
        import fsspec

        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:  # an unknown protocol, or its package (s3fs, gcsfs) missing
        raise BatchInputError(
            f"cannot open the bucket prefix {url}: {exc}. Install the fsspec backend for it, or mount the "
            "bucket and pass the folder"
        ) from None


def _list_prefix(url: str) -> list[str]:
    fs, root = _filesystem(url)
    return [fs.unstrip_protocol(key) for key in fs.find(root)]


def read_inputs(source: InputSource, keys: Iterable[str], max_bytes: int) -> Iterator[tuple[str, bytes | Rejected]]:
    """(key, bytes or Rejected) for each of `keys`: files over `max_bytes` are too_large (never read whole)."""
    wanted = list(keys)
    if source.kind == "archive":
        yield from _read_archive(Path(source.location), wanted, max_bytes)
        return
    for key in wanted:
        yield key, _read_one(source, key, max_bytes)


def _read_one(source: InputSource, key: str, max_bytes: int) -> bytes | Rejected:
    try:
        if source.kind == "prefix":
            fs, path = _filesystem(key)
            size, opener = fs.size(path), lambda: fs.open(path, "rb")
        else:
            path = Path(source.location).parent / key if source.kind == "manifest" else Path(source.location) / key
            size, opener = path.stat().st_size, lambda: path.open("rb")
        if size > max_bytes:
            return Rejected(TOO_LARGE, f"{size} bytes, over the cap of {max_bytes}")
        with opener() as handle:
            return _capped(handle, max_bytes)
    except (OSError, BatchInputError) as exc:
        return Rejected(UNREADABLE, f"{type(exc).__name__}: {exc}")


def _capped(handle, max_bytes: int) -> bytes | Rejected:
    data = handle.read(max_bytes + 1)
    return Rejected(TOO_LARGE, f"over the cap of {max_bytes} bytes") if len(data) > max_bytes else data


def _read_archive(archive: Path, keys: list[str], max_bytes: int) -> Iterator[tuple[str, bytes | Rejected]]:
    """One pass over the archive (a .tar.gz cannot be read out of order), yielding the wanted members."""
    wanted = set(keys)
    seen: set[str] = set()
    try:
        for name, stream in iter_members(archive):
            if name in wanted and name not in seen:
                seen.add(name)
                try:
                    yield name, _capped(stream, max_bytes)
                except (OSError, EOFError) as exc:  # a damaged compressed stream
                    yield name, Rejected(UNREADABLE, f"{type(exc).__name__}: {exc}")
    except (ArchiveError, OSError, EOFError) as exc:
        detail = f"the archive could not be read to the end: {exc}"
        yield from ((key, Rejected(UNREADABLE, detail)) for key in keys if key not in seen)
        return
    yield from ((key, Rejected(UNREADABLE, "no such member in the archive")) for key in keys if key not in seen)
