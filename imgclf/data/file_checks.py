"""The per-file half of validation: every file is read and decoded once, in parallel, and an unusable
one gets a reason (from `imgclf.data.decode`, or outside_root / not_a_file / unreadable /
changed_since_ingest). Never raises for a bad file: a bad file is a verdict, not a crash."""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from imgclf.data.decode import ImageRejected, open_image
from imgclf.data.ingest import resolve_inside
from imgclf.data.manifest import QUARANTINE_COLUMNS, DatasetManifest, Quarantine
from imgclf.data.validation_config import ValidationConfig
from imgclf.logs import progress

log = logging.getLogger(__name__)
_CHUNK = 2048  # rows in flight at once: memory stays flat however many files there are


def check_images(
    manifest: DatasetManifest, config: ValidationConfig, workers: int | None = None
) -> tuple[DatasetManifest, Quarantine]:
    """The per-file half of `validate`: (readable images, quarantined files). Labels are not checked."""
    readable, rejected = check_files(manifest, config, workers)
    return DatasetManifest(manifest.root, readable), Quarantine(rejected.reset_index(drop=True))


def check_files(
    manifest: DatasetManifest, config: ValidationConfig, workers: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read and decode every file once, in parallel. Returns (readable rows, rejected rows).

    Readable rows carry the sha256 of the bytes that were decoded. Rejected rows are quarantine
    records (path, reason, detail) with the manifest's index, so the caller can keep file order.
    """
    root = Path(manifest.root)
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    total = len(manifest.records)
    chunks = (manifest.records.iloc[start : start + _CHUNK].to_dict("records") for start in range(0, total, _CHUNK))
    results: list[tuple[str | None, str, str]] = []
    with warnings.catch_warnings():  # PIL warns about odd EXIF/TIFF tags; the verdict is what counts
        warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for rows in progress(chunks, "checking files", total, log, unit="files", size=len):
                results.extend(pool.map(lambda row: _check_file(root, row, config), rows))
    records = manifest.records.copy()
    records["sha256"] = [sha for _, _, sha in results]
    rejected_mask = [reason is not None for reason, _, _ in results]
    rejected = pd.DataFrame(
        [(path, reason, detail) for path, (reason, detail, _) in zip(records["path"], results) if reason is not None],
        columns=QUARANTINE_COLUMNS,
        index=records.index[rejected_mask],
    )
    return records[[not r for r in rejected_mask]], rejected


def _check_file(root: Path, row: dict, config: ValidationConfig) -> tuple[str | None, str, str]:
    """(reason or None, detail, sha256) for one file. Never raises: a bad file is a verdict, not a crash."""
    sha = row["sha256"] if isinstance(row["sha256"], str) else ""
    real = resolve_inside(root, row["path"])
    if real is None:
        return "outside_root", "path or link resolves outside the data root; not read", sha
    if not real.is_file():
        return "not_a_file", "path is not a regular file", sha
    try:
        data = real.read_bytes()
    except OSError as exc:
        return "unreadable", f"cannot read the file ({exc})", sha
    actual = hashlib.sha256(data).hexdigest()
    if sha and sha != actual:
        return "changed_since_ingest", f"content hash {actual[:12]}… differs from {sha[:12]}… recorded at ingest", sha
    try:
        open_image(data, max_pixels=config.max_pixels, min_size=config.min_size)
    except ImageRejected as exc:
        return exc.reason, exc.detail, actual
    except Exception as exc:  # a decoder bug must neither stop the run nor lose the file
        return "corrupt", f"unexpected decoder error ({type(exc).__name__}: {exc})", actual
    return None, "", actual
