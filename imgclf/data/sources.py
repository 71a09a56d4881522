"""Every kind of data source users have, turned into one manifest.

- a folder per class (nested folders allowed; the class is the first level)
- a folder already split into train/ val/ test/, each a folder per class (the split is honoured)
- a CSV or JSON manifest `file -> label`, single- or multi-label (`"cat|outdoor"` or a JSON list),
  extra columns (e.g. `group`, `site`) carried through; paths resolve inside the manifest's folder
- a local .zip / .tar(.gz) archive or an http(s) URL of one, extracted safely, then any of the above
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from imgclf import paths
from imgclf.data.archive import ArchiveLimits, download, extract, is_archive
from imgclf.data.fetch import FetchPolicy
from imgclf.data.ingest import DataSourceError, describe_files, ingest_folder, list_files
from imgclf.data.manifest import MANIFEST_COLUMNS, DatasetManifest

SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
PATH_COLUMNS = ("file", "path", "filename", "image")
LABEL_COLUMNS = ("label", "labels")


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path_column: str | None = Field(
        None, description=f"manifest column with file paths; default: first of {PATH_COLUMNS}"
    )
    label_column: str | None = Field(
        None, description=f"manifest column with labels; default: first of {LABEL_COLUMNS}"
    )
    label_separator: str = Field("|", min_length=1, description="separates labels of a multi-label row")
    max_archive_bytes: int = Field(20 * 1024**3, ge=1, description="cap on an archive's extracted size (and download)")
    max_archive_members: int = Field(1_000_000, ge=1)
    work_dir: str | None = Field(
        None, description="where archives are downloaded/extracted; default $IMGCLF_STATE/sources"
    )
    download_sha256: str | None = Field(
        None, pattern="^[0-9a-fA-F]{64}$", description="pin for a URL source: other content is refused"
    )
    download_allowed_hosts: list[str] | None = Field(None, description="hosts a URL source may come from")
    download_allow_private: bool = Field(False, description="allow a URL source on loopback/private networks")
    download_deadline_s: float = Field(6 * 3600, gt=0, description="the whole download of a URL source")


def load_source(source: str | Path, config: SourceConfig = SourceConfig()) -> DatasetManifest:
    """Dispatch on the kind of `source` and return the manifest of everything it holds."""
    source = str(source)
    work = Path(config.work_dir) if config.work_dir else paths.sources_dir()
    limits = ArchiveLimits(config.max_archive_bytes, config.max_archive_members, config.max_archive_bytes)
    if source.lower().startswith(("http://", "https://")):
        source = str(download(source, work / "downloads", limits, _download_policy(config)))
    path = Path(source).expanduser()
    if is_archive(path):
        if not path.is_file():
            raise DataSourceError(f"archive {path} does not exist")
        with path.open("rb") as stream:  # streamed: an archive may be as large as the extraction cap
            digest = hashlib.file_digest(stream, "sha256").hexdigest()[:24]
        target = work / "extracted" / digest
        if not target.is_dir():
            extract(path, target, limits)
        return load_source(_single_top_folder(target), config)
    if path.is_file() and path.suffix.lower() in (".csv", ".json"):
        return from_manifest_file(path, config)
    if path.is_dir() and _split_folders(path):
        return from_split_folder(path)
    return ingest_folder(path)


def _download_policy(config: SourceConfig) -> FetchPolicy:
    """A data set is big and slow: a long deadline and read timeout; the byte cap comes from the limits."""
    return FetchPolicy(
        allow_private=config.download_allow_private,
        allowed_hosts=config.download_allowed_hosts,
        connect_timeout_s=30,
        read_timeout_s=120,
        deadline_s=config.download_deadline_s,
        max_redirects=5,
        sha256=config.download_sha256,
    )


def _single_top_folder(root: Path) -> Path:
    """An archive usually wraps everything in one folder; look inside it."""
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else root


def _split_folders(root: Path) -> dict[str, str]:
    """{folder name: split} when `root` holds only split folders (and train among them), else {}."""
    dirs = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    mapped = {d: SPLIT_FOLDERS.get(d.lower()) for d in dirs}
    if dirs and all(mapped.values()) and "train" in mapped.values():
        return mapped  # type: ignore[return-value]
    return {}


def from_split_folder(root: Path) -> DatasetManifest:
    """train/ val/ test/ folders, each a folder per class: the given split is kept as is."""
    frames = []
    for folder, split in sorted(_split_folders(root).items()):
        rels = [f"{folder}/{rel}" for rel in list_files(root / folder)]
        rows = describe_files(root, rels)
        for row in rows:
            parts = row["path"].split("/")
            row["label"] = parts[1] if len(parts) > 2 else ""
            row["split"] = split
        frames.append(pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, "split"]))
    return DatasetManifest(root=str(root.resolve()), records=pd.concat(frames, ignore_index=True))


def from_manifest_file(path: Path, config: SourceConfig = SourceConfig()) -> DatasetManifest:
    """A CSV or JSON list of `file -> label(s)` (+ extra columns), paths relative to the file's folder."""
    root = path.parent.resolve()
    try:
        table = _read_table(path)
    except (ValueError, json.JSONDecodeError, pd.errors.ParserError) as exc:
        raise DataSourceError(f"manifest {path} cannot be parsed: {exc}") from None
    path_col = _pick_column(table, config.path_column, PATH_COLUMNS, "path", path)
    label_col = _pick_column(table, config.label_column, LABEL_COLUMNS, "label", path)
    if table.empty:
        raise DataSourceError(f"manifest {path} has no rows")
    rels = [_relative_inside(root, value) for value in table[path_col]]
    rows = describe_files(root, rels)
    reserved = set(MANIFEST_COLUMNS) | {"split"}
    extras = [c for c in table.columns if c not in (path_col, label_col) and c not in reserved]
    for row, label, (_, extra) in zip(rows, table[label_col], table[extras].iterrows()):
        row["label"] = _normalise_label(label, config.label_separator)
        row.update({c: extra[c] for c in extras})
    records = pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, *extras])
    if "split" in table.columns:  # a manifest may carry its own split
        records["split"] = table["split"].map(lambda s: SPLIT_FOLDERS.get(str(s).lower(), "")).to_numpy()
    return DatasetManifest(root=str(root), records=records)


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    data = json.loads(path.read_text())
    if isinstance(data, dict):  # {"file": "label", ...}
        return pd.DataFrame({"file": list(data), "label": list(data.values())})
    if isinstance(data, list) and all(isinstance(item, dict) for item in data):
        return pd.DataFrame(data)
    raise ValueError("expected a JSON object {file: label} or a list of objects with file and label keys")


def _pick_column(table: pd.DataFrame, chosen: str | None, candidates: tuple[str, ...], what: str, path: Path) -> str:
    options = [chosen] if chosen else list(candidates)
    for name in options:
        if name in table.columns:
            return name
    raise DataSourceError(
        f"manifest {path} has no {what} column (looked for {options}; columns: {list(table.columns)})"
    )


def _relative_inside(root: Path, value: Any) -> str:
    """Manifest paths are relative to the manifest's folder; an absolute path inside it is made
    relative. Anything else is kept verbatim so validation quarantines it (it is never read)."""
    text = str(value).replace("\\", "/")
    candidate = Path(text)
    if candidate.is_absolute():
        try:
            return candidate.resolve().relative_to(root).as_posix()
        except ValueError:
            return text
    return text


def _normalise_label(value: Any, separator: str) -> str:
    """One canonical string per row: single label as is; multi-label sorted and joined by '|'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    parts = [str(v).strip() for v in value] if isinstance(value, (list, tuple)) else str(value).split(separator)
    parts = sorted({p.strip() for p in parts if p.strip()})
    return "|".join(parts)
