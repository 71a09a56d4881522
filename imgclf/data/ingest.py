"""Reading a data source into a manifest: every file received becomes a row, readable or not.

Ingest never decides what to keep (validation does); it records what arrived so that
`kept + quarantined == received` can be checked later.
"""

from __future__ import annotations

import hashlib
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


def ingest_folder(source: str | Path, workers: int = 4) -> DatasetManifest:
    """A folder with one sub-folder per class (nested folders allowed; the class is the first level).

    Files directly in the root get an empty label and are quarantined by validation. Hidden files
    (names starting with '.') are not images a user placed and are skipped.
    """
    root = Path(source).expanduser()
    if not root.exists():
        raise DataSourceError(f"data source {root} does not exist")
    if not root.is_dir():
        raise DataSourceError(f"data source {root} is not a folder (expected one sub-folder per class)")
    rel_paths: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                rel_paths.append(Path(dirpath, name).relative_to(root).as_posix())
    if not rel_paths:
        raise DataSourceError(f"data source {root} contains no files")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        rows = list(pool.map(lambda rel: _describe(root, rel), rel_paths))
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
        with Image.open(real) as im:  # header only, no pixel decode
            row.update(format=str(im.format), mode=im.mode, width=im.size[0], height=im.size[1])
    except Exception:
        pass  # unreadable: validation gives the reason
    return row
