"""Where the project keeps its files: the state directory and everything under it, in one place.

`IMGCLF_STATE` names the state directory (infra/env.sh sets it to the checkout's `.state/`; without it,
`.state` in the working directory). The decoded-image cache may live elsewhere (`IMGCLF_CACHE_DIR`,
e.g. a fast local disk). Every function reads the environment when called, so a test or a step that
sets a variable is obeyed.
"""

from __future__ import annotations

import os
from pathlib import Path

STATE_ENV = "IMGCLF_STATE"
CACHE_ENV = "IMGCLF_CACHE_DIR"


def state_dir() -> Path:
    return Path(os.environ.get(STATE_ENV, ".state"))


def cache_dir() -> Path:
    """Decoded-image caches (uint8 `.npy`, content-addressed)."""
    return Path(os.environ.get(CACHE_ENV) or state_dir() / "cache")


def sources_dir() -> Path:
    """Downloaded and extracted archives of data sources."""
    return state_dir() / "sources"


def deployments_dir() -> Path:
    """Fetched model versions, running-service records and their logs."""
    return state_dir() / "deployments"


def reports_dir() -> Path:
    """Evaluation reports and model cards fetched from the registry for reading."""
    return state_dir() / "reports"


def checkpoints_dir(run_key: str) -> Path:
    """Per-epoch checkpoints of one training run (data and config)."""
    return state_dir() / "checkpoints" / run_key


def tensorboard_dir(run_key: str) -> Path:
    return state_dir() / "tensorboard" / run_key


def locks_dir() -> Path:
    """Lock files that serialise registry stage moves made from this machine."""
    return state_dir() / "locks"


def monitoring_dir() -> Path:
    """What the service observed: the prediction log (`predictions.db`)."""
    return state_dir() / "monitoring"


def label_queue_dir() -> Path:
    """The active-learning queue: uncertain images re-encoded without metadata, and their index."""
    return state_dir() / "label-queue"
