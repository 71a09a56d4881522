"""Reading a data source into a manifest: every file received becomes a row, readable or not.

Ingest never decides what to keep (validation does); it records what arrived so that
`received == kept + quarantined + duplicates` can be checked later.
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image

from imgclf.data.manifest import MANIFEST_COLUMNS, DatasetManifest

_HEADER_UNKNOWN = {"format": "", "mode": "", "width": -1, "height": -1}


class DataSourceError(ValueError):
    """The data source itself is unusable (missing, empty, wrong kind)."""


def resolve_inside(root: Path, relative: str) -> Path | None:
    """The real path of `relative` under `root`, or None when it (or a link on the way) escapes root."""
    root_real = root.resolve()
    candidate = (root / relative).resolve()
    try:
        candidate.relative_to(root_real)
    except ValueError:
        return None
    return candidate


def list_files(root: Path) -> list[str]:
    """Every non-hidden file under `root` (POSIX paths relative to it, sorted); links are not followed."""
    rel_paths: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_paths.extend(
            Path(dirpath, n).relative_to(root).as_posix() for n in sorted(filenames) if not n.startswith(".")
        )
    return rel_paths


def describe_files(root: Path, rel_paths: list[str], workers: int = 4, chunk: int = 2048) -> list[dict]:
    """Manifest rows for `rel_paths` (hash, size, header); at most `chunk` files in flight at once,
    so memory stays flat however many files there are."""
    rows: list[dict] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(rel_paths), chunk):
            rows.extend(pool.map(lambda rel: _describe(root, rel), rel_paths[start : start + chunk]))
    return rows


def ingest_folder(source: str | Path, workers: int = 4) -> DatasetManifest:
    """A folder with one sub-folder per class (nested folders allowed; the class is the first level).

    Files directly in the root get an empty label and are quarantined by validation. Hidden files
    (names starting with '.') are not images a user placed and are skipped.
    """
    root = Path(source).expanduser()
    if not root.exists():
        raise DataSourceError(f"data source {root} does not exist")
    if not root.is_dir():
        raise DataSourceError(f"data source {root} is not a folder, a CSV/JSON manifest or an archive")
    rel_paths = list_files(root)
    if not rel_paths:
        raise DataSourceError(f"data source {root} contains no files")
    rows = describe_files(root, rel_paths, workers)
    return DatasetManifest(root=str(root.resolve()), records=pd.DataFrame(rows, columns=MANIFEST_COLUMNS))


def _describe(root: Path, rel: str) -> dict:
    parts = rel.split("/")
    row = {"path": rel, "label": parts[0] if len(parts) > 1 else "", "sha256": "", "bytes": -1, **_HEADER_UNKNOWN}
    real = resolve_inside(root, rel)
    if real is None or not real.is_file():
        return row  # never read a file outside the root; validation quarantines it
    data = real.read_bytes()
    row["sha256"] = hashlib.sha256(data).hexdigest()
    row["bytes"] = len(data)
    try:
        with Image.open(io.BytesIO(data)) as im:  # header only, no pixel decode
            row.update(format=str(im.format), mode=im.mode, width=im.size[0], height=im.size[1])
    except Exception:
        pass  # unreadable: validation gives the reason
    return row
