"""What the service keeps of each answered image: the prediction log row (imgclf.monitoring), built from
what the decoding thread measured and what the model answered. Appending never blocks a request."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass

import numpy as np

from imgclf.data.decode import ImageInfo
from imgclf.monitoring.log import PredictionLog
from imgclf.monitoring.record import PredictionRow
from imgclf.monitoring.stats import ImageStatistics, image_statistics
from imgclf.serving.answers import probabilities
from imgclf.serving.predictor import Predictor


@dataclass(frozen=True)
class Observed:
    """One decoded upload: the model input and what the log records of the image itself."""

    input: np.ndarray  # (C, H, W) float32, normalised
    statistics: ImageStatistics
    info: ImageInfo
    sha256: str


def observe(predictor: Predictor, data: bytes) -> Observed:
    """Decode `data` and measure it (runs in a decoding thread). Bad input raises ImageRejected."""
    decoded = predictor.decode(data)
    return Observed(
        input=predictor.spec.normalize(decoded.pixels[None])[0],
        statistics=image_statistics(decoded.pixels),
        info=decoded.info,
        sha256=hashlib.sha256(data).hexdigest(),
    )


class Recorder:
    """One per worker: turns each answered image into a prediction log row."""

    def __init__(self, predictor: Predictor, stage: str | None, log: PredictionLog | None = None) -> None:
        self.predictor, self.stage = predictor, stage or None
        self.log = log if log is not None else PredictionLog()

    def record(
        self, observed: list[Observed], logits: np.ndarray, answers: list[dict], source: str, started: float
    ) -> None:
        """`started` is the request's time.perf_counter() at arrival; one request id for all its images."""
        if not self.log.enabled:
            return
        request_id = uuid.uuid4().hex
        latency_ms = 1e3 * (time.perf_counter() - started)
        for item, row, answer in zip(observed, logits, answers, strict=True):
            self.log.append(
                PredictionRow.from_answer(
                    answer,
                    probabilities(row, self.predictor.thresholds),
                    statistics=item.statistics,
                    request_id=request_id,
                    model_version=self.predictor.model_version,
                    model_stage=self.stage,
                    source=source,
                    sha256=item.sha256,
                    width=item.info.width,
                    height=item.info.height,
                    format=item.info.format,
                    mode=item.info.mode,
                    latency_ms=latency_ms,
                )
            )

    def close(self) -> None:
        self.log.close()
