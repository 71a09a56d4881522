"""Where a model or a stage move came from: the code (git commit), the data (DVC's hash of the data
folder), and who acted. Recorded on registered versions and in every stage move's audit record."""

from __future__ import annotations

import getpass
import hashlib
import os
import subprocess
from pathlib import Path


def actor() -> str:
    """Who is acting: the GitHub user in Actions, else the OS user."""
    return os.environ.get("GITHUB_ACTOR") or getpass.getuser()


def git_commit(where: str | Path = ".") -> str:
    """The commit being run (GITHUB_SHA in Actions), "" outside a git checkout."""
    if os.environ.get("GITHUB_SHA"):
        return os.environ["GITHUB_SHA"]
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def dvc_data_version(data_source: str | Path, lock_file: str | Path = "dvc.lock") -> str:
    """DVC's hash of the output in `dvc.lock` that holds `data_source` (what `dvc checkout` restores),
    else the lock file's own sha256 (the pipeline's whole data state), else "" without a lock file."""
    import yaml

    lock = Path(lock_file)
    if not lock.is_file():
        return ""
    source = Path(data_source).resolve()
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for out in stage.get("outs", []):
            folder = (lock.parent / out["path"]).resolve()
            if (source == folder or folder in source.parents) and out.get("md5"):
                return f"{out['path']}@md5:{out['md5']}"
    return f"dvc.lock@sha256:{hashlib.sha256(lock.read_bytes()).hexdigest()[:16]}"
