"""What the queue holds per image (`QueueItem`), and the error every refusal of bad input raises."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

SHA256 = re.compile(r"^[0-9a-f]{64}$")
SOURCE = "active-learning queue"  # the provenance `source` of an imported image


class QueueError(ValueError):
    """Bad input to the queue (an unknown item, a bad label, an unreadable file); the message names it."""


@dataclass(frozen=True)
class QueueItem:
    """One queued image: the re-encoded PNG `images/<sha256>.png`, the model's answer and why it was kept."""

    sha256: str  # of the bytes the service received (the prediction log's key); the PNG's name
    predicted: str
    confidence: float
    margin: float
    entropy: float  # normalised: 0..1
    top_k: tuple[tuple[str, float], ...]
    model_version: str
    queued_at: float  # unix seconds
    size_bytes: int
    width: int
    height: int

    @property
    def file_name(self) -> str:
        return f"{self.sha256}.png"

    @property
    def queued_iso(self) -> str:
        return iso(self.queued_at)


def iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")


def check_sha256(value: str) -> str:
    value = str(value).strip().lower()
    if not SHA256.match(value):
        raise QueueError(f"not a sha256 (64 hex digits): {value!r}")
    return value
