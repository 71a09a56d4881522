"""One answered image as one row of the prediction log: what was asked (source, size, format, the
image statistics), what was answered (label, confidence, margin, entropy, top-k) and how fast, by which
model. Never EXIF and never the image bytes: the sha256 identifies an image without keeping it.

`COLUMNS` is the stable column order of the store and of `read_window`; `DTYPES` are the pandas
dtypes a window is read back with (names only, so the service need not import pandas).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from urllib.parse import urlsplit

import numpy as np

from imgclf.monitoring.stats import STATISTICS, ImageStatistics

UPLOAD = "upload"
URL_PREFIX = "url:"
BATCH = "batch"  # classified by the batch inference pipeline (imgclf.batch), not answered to a client


@dataclass(frozen=True)
class PredictionRow:
    """`time` is timezone-aware UTC. `pred_entropy` is in nats (natural log) of the probability vector
    normalised to sum 1. `top_k` is a JSON string of [{"label", "confidence"}]. `embedding` is the
    model's projected embedding (D floats) or None when the model has none."""

    time: datetime
    request_id: str
    model_version: str
    model_stage: str | None
    source: str
    sha256: str
    width: int
    height: int
    format: str | None
    mode: str | None
    brightness: float
    contrast: float
    saturation: float
    sharpness: float
    entropy: float
    clipped: float
    label: str
    confidence: float
    margin: float
    pred_entropy: float
    top_k: str
    latency_ms: float
    embedding: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.time.tzinfo is None or self.time.utcoffset() != UTC.utcoffset(None):
            raise ValueError(f"prediction row time must be timezone-aware UTC, got {self.time!r}")
        url = self.source.startswith(URL_PREFIX) and len(self.source) > len(URL_PREFIX)
        if self.source not in (UPLOAD, BATCH) and not url:
            raise ValueError(f"prediction row source must be 'upload', 'batch' or 'url:<host>', got {self.source!r}")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"prediction row sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"prediction row size must be positive, got {self.width}x{self.height}")

    @classmethod
    def from_answer(
        cls,
        answer: Mapping,
        probabilities: np.ndarray,
        *,
        statistics: ImageStatistics,
        request_id: str,
        model_version: str,
        model_stage: str | None,
        source: str,
        sha256: str,
        width: int,
        height: int,
        format: str | None,
        mode: str | None,
        latency_ms: float,
        embedding: np.ndarray | Sequence[float] | None = None,
        time: datetime | None = None,
    ) -> PredictionRow:
        """The row for one answer (the service's dict: `label`, `confidence`, `top_k`) and the model's
        probabilities over all classes (softmax; a multi-label model's sigmoid scores are normalised
        to sum 1 for the entropy). `time` defaults to now (UTC)."""
        margin, pred_entropy = margin_and_entropy(probabilities)
        top_k = [{"label": str(t["label"]), "confidence": float(t["confidence"])} for t in answer["top_k"]]
        return cls(
            time=time or datetime.now(UTC),
            request_id=request_id,
            model_version=model_version,
            model_stage=model_stage,
            source=source,
            sha256=sha256,
            width=int(width),
            height=int(height),
            format=format,
            mode=mode,
            **asdict(statistics),
            label=str(answer["label"]),
            confidence=float(answer["confidence"]),
            margin=margin,
            pred_entropy=pred_entropy,
            top_k=json.dumps(top_k, separators=(",", ":")),
            latency_ms=float(latency_ms),
            embedding=None if embedding is None else tuple(float(v) for v in np.asarray(embedding).ravel()),
        )


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(PredictionRow))
_TEXT = ("request_id", "model_version", "model_stage", "source", "sha256", "format", "mode", "label", "top_k")
DTYPES: dict[str, str] = {
    "time": "datetime64[ns, UTC]",
    **dict.fromkeys(_TEXT, "string"),
    "width": "int64",
    "height": "int64",
    **dict.fromkeys((*STATISTICS, "confidence", "margin", "pred_entropy", "latency_ms"), "float64"),
    "embedding": "object",  # a float32 numpy array per row, or None
}


def margin_and_entropy(probabilities: np.ndarray) -> tuple[float, float]:
    """(top-1 minus top-2 probability, entropy in nats of the vector normalised to sum 1). One class:
    margin is its probability."""
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    if p.size == 0 or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"probabilities must be finite, non-negative and not all zero, got {p!r}")
    top = np.sort(p)[::-1]
    margin = float(top[0] - top[1]) if p.size > 1 else float(top[0])
    q = p[p > 0] / p.sum()
    return margin, float(-(q * np.log(q)).sum()) + 0.0


def source_of_url(url: str) -> str:
    """`url:<host>` for a fetched image: the host name only (lowercased), never the scheme, port,
    path, query, fragment or credentials, which can carry tokens or personal data."""
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError as exc:
        raise ValueError(f"cannot read a host from the image URL: {exc}") from None
    if not host:
        raise ValueError("the image URL has no host name")
    return URL_PREFIX + host.rstrip(".")


def row_values(row: PredictionRow) -> tuple:
    """The row as stored: time as integer microseconds since the epoch (UTC), the embedding as
    little-endian float32 bytes (4 bytes per dimension), everything else as is."""
    values = [getattr(row, name) for name in COLUMNS]
    values[0] = to_micros(row.time)
    if row.embedding is not None:
        values[-1] = np.asarray(row.embedding, dtype="<f4").tobytes()
    return tuple(values)


def to_micros(time: datetime) -> int:
    delta = time - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def embedding_from_bytes(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, dtype="<f4").astype(np.float32)
