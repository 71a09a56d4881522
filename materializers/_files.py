"""Moving a folder of plain files between a local temp dir and the artifact store (local or remote)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from zenml.io import fileio


def upload_dir(local: Path, uri: str) -> None:
    fileio.makedirs(uri)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            target = os.path.join(uri, path.relative_to(local).as_posix())
            fileio.makedirs(os.path.dirname(target))
            fileio.copy(str(path), target, overwrite=True)


def download_dir(uri: str) -> Path:
    """A local copy of the artifact folder (the folder itself when the store is local)."""
    if os.path.isdir(uri):
        return Path(uri)
    local = Path(tempfile.mkdtemp(prefix="imgclf-artifact-"))
    for root, _, files in fileio.walk(uri):
        root = root.decode() if isinstance(root, bytes) else str(root)
        for name in files:
            name = name.decode() if isinstance(name, bytes) else str(name)
            rel = os.path.relpath(os.path.join(root, name), uri)
            (local / rel).parent.mkdir(parents=True, exist_ok=True)
            fileio.copy(os.path.join(root, name), str(local / rel), overwrite=True)
    return local
