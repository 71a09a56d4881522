"""One shard classified as the service would: the same decoding and caps (Predictor.decode, SERVING_LIMITS,
the upload size cap), the ONNX file the bundle serves (the INT8 model when it won), the same answer and the
same prediction log row (source `batch`). Every key of the shard comes back as one prediction row:
predicted, or rejected with the reason."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from imgclf.batch.inputs import UNREADABLE, InputSource, Rejected, read_inputs
from imgclf.batch.shards import Shard
from imgclf.data.decode import ImageRejected
from imgclf.monitoring.record import BATCH, COLUMNS, DTYPES, PredictionRow
from imgclf.serving.observation import Observed, observe
from imgclf.serving.predictor import MAX_UPLOAD_BYTES, Predictor

PREDICTED, REJECTED = "predicted", "rejected"
PREDICTION_COLUMNS = (
    "file",
    "shard",
    "status",
    "label",
    "confidence",
    "top_k_labels",
    "top_k_scores",
    "model_version",
    "sha256",
    "error_reason",
    "error_detail",
)


class ClassifySettings(BaseModel):
    """How a shard is run. `threads`: ORT's threads for this process (None: every core it may use; 1 when
    several shards share a machine). `model_stage`: recorded in the monitoring rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    top_k: int = Field(3, ge=1)
    batch_size: int = Field(32, ge=1, le=1024)
    threads: int | None = Field(None, ge=1)
    max_bytes: int = Field(MAX_UPLOAD_BYTES, ge=1)
    model_stage: str | None = None


@dataclass(frozen=True)
class ShardOutput:
    """`predictions`: PREDICTION_COLUMNS, one row per key; `monitoring`: the prediction log's COLUMNS, one
    row per predicted image."""

    index: int
    predictions: pd.DataFrame
    monitoring: pd.DataFrame
    rows: tuple[PredictionRow, ...] = ()  # `monitoring` as rows, for a PredictionLog

    def write(self, folder: str | Path) -> tuple[Path, Path]:
        """predictions-NNNNN.parquet and monitoring-NNNNN.parquet in `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = (folder / f"predictions-{self.index:05d}.parquet", folder / f"monitoring-{self.index:05d}.parquet")
        self.predictions.to_parquet(paths[0], index=False)
        self.monitoring.to_parquet(paths[1], index=False)
        return paths


@dataclass(frozen=True)
class _Pending:
    key: str
    observed: Observed
    decode_ms: float


def load_predictor(bundle: str | Path, model_version: str, settings: ClassifySettings) -> Predictor:
    """The bundle's serving choice (model.int8.onnx when INT8 won, else model.onnx) under ORT."""
    return Predictor.from_path(bundle, model_version, threads=settings.threads)


def classify_shard(
    source: InputSource, shard: Shard, predictor: Predictor, settings: ClassifySettings = ClassifySettings()
) -> ShardOutput:
    """Every key of `shard` read, decoded and classified in batches of `settings.batch_size`."""
    results: list[dict] = []
    rows: list[PredictionRow] = []
    pending: list[_Pending] = []
    for key, data in read_inputs(source, shard.files, settings.max_bytes):
        started = time.perf_counter()
        try:
            if isinstance(data, Rejected):
                raise ImageRejected(data.reason, data.detail)
            observed = observe(predictor, data, measure=True)
        except ImageRejected as exc:
            results.append(_rejected(key, shard.index, predictor.model_version, exc, data))
            continue
        except Exception as exc:  # a decoder failure nobody foresaw: this file's row says so, the batch goes on
            failed = ImageRejected(UNREADABLE, f"decoding failed ({type(exc).__name__}: {exc})")
            results.append(_rejected(key, shard.index, predictor.model_version, failed, data))
            continue
        pending.append(_Pending(key, observed, 1e3 * (time.perf_counter() - started)))
        if len(pending) == settings.batch_size:
            _run_batch(predictor, pending, shard.index, settings, results, rows)
            pending = []
    _run_batch(predictor, pending, shard.index, settings, results, rows)
    predictions = pd.DataFrame(results, columns=list(PREDICTION_COLUMNS))
    return ShardOutput(
        shard.index, predictions.sort_values("file", ignore_index=True), monitoring_frame(rows), tuple(rows)
    )


def _rejected(key: str, shard: int, version: str, exc: ImageRejected, data) -> dict:
    import hashlib

    digest = hashlib.sha256(data).hexdigest() if isinstance(data, bytes) else None
    return {
        "file": key,
        "shard": shard,
        "status": REJECTED,
        "label": None,
        "confidence": float("nan"),
        "top_k_labels": [],
        "top_k_scores": [],
        "model_version": version,
        "sha256": digest,
        "error_reason": exc.reason,
        "error_detail": exc.detail,
    }


def _run_batch(
    predictor: Predictor,
    pending: list[_Pending],
    shard: int,
    settings: ClassifySettings,
    results: list[dict],
    rows: list[PredictionRow],
) -> None:
    """One ORT run over the decoded images; their prediction rows and monitoring rows appended."""
    if not pending:
        return
    started = time.perf_counter()
    logits, embeddings = predictor.split(predictor.run_alone(np.stack([p.observed.input for p in pending])))
    scores = predictor.scores(logits)
    model_ms = 1e3 * (time.perf_counter() - started) / len(pending)
    request_id = uuid.uuid4().hex  # one per ORT batch, as one per request in the service
    for i, item in enumerate(pending):
        answer = predictor.scored_answer(scores[i], settings.top_k)
        top = answer["top_k"]
        results.append(
            {
                "file": item.key,
                "shard": shard,
                "status": PREDICTED,
                "label": answer["label"],
                "confidence": float(answer["confidence"]),
                "top_k_labels": [str(t["label"]) for t in top],
                "top_k_scores": [float(t["confidence"]) for t in top],
                "model_version": predictor.model_version,
                "sha256": item.observed.sha256,
                "error_reason": None,
                "error_detail": None,
            }
        )
        rows.append(_log_row(predictor, item, answer, scores[i], embeddings, i, request_id, settings, model_ms))


def _log_row(predictor, item: _Pending, answer, probs, embeddings, i, request_id, settings, model_ms) -> PredictionRow:
    info = item.observed.info
    return PredictionRow.from_answer(
        answer,
        probs,
        statistics=item.observed.statistics,
        request_id=request_id,
        model_version=predictor.model_version,
        model_stage=settings.model_stage,
        source=BATCH,
        sha256=item.observed.sha256,
        width=info.width,
        height=info.height,
        format=info.format,
        mode=info.mode,
        latency_ms=item.decode_ms + model_ms,  # its decode plus its share of the batch's model run
        embedding=None if embeddings is None else embeddings[i],
    )


def monitoring_frame(rows: list[PredictionRow]) -> pd.DataFrame:
    """Prediction log rows as the log's COLUMNS typed as DTYPES (what read_window returns); the embedding
    a list of floats or None, so parquet stores it as a list column."""
    frame = pd.DataFrame([[getattr(row, name) for name in COLUMNS] for row in rows], columns=list(COLUMNS))
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    frame["embedding"] = [None if e is None else list(e) for e in frame["embedding"]]
    return frame.astype({name: dtype for name, dtype in DTYPES.items() if name not in ("time", "embedding")})
