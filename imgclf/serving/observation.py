"""What the service keeps of each answered image: the prediction log row (imgclf.monitoring), built from
what the decoding thread measured and what the model answered, and, for an uncertain single-label
prediction, an offer to the active-learning queue (imgclf.labelling). Neither blocks a request: rows go
to the log's background writer, offers to the decoding threads.

IMGCLF_LABEL_QUEUE=off keeps nothing for labelling (the queue's limits: QueuePolicy's defaults).
IMGCLF_PREDICTION_LOG=off logs nothing, so the image statistics (only the log records them) are not
computed either; the queue needs only the upload and its sha256."""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from imgclf.data.decode import ImageInfo, open_image
from imgclf.labelling.policy import uncertainty
from imgclf.labelling.queue import LabelQueue
from imgclf.monitoring.log import PredictionLog
from imgclf.monitoring.record import PredictionRow
from imgclf.monitoring.stats import ImageStatistics, image_statistics
from imgclf.monitoring.store import log_target
from imgclf.serving.predictor import Predictor

LABEL_QUEUE_ENV = "IMGCLF_LABEL_QUEUE"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Observed:
    """One decoded upload: the model input and what the log records of the image itself."""

    input: np.ndarray  # (C, H, W) float32, normalised
    statistics: ImageStatistics | None  # None: not measured, the prediction log is off
    info: ImageInfo
    sha256: str
    data: bytes  # the upload itself, held only while the request lasts: decoded again if it is queued


def observe(predictor: Predictor, data: bytes, measure: bool | None = None) -> Observed:
    """Decode `data` and, when `measure`, compute its image statistics (runs in a decoding thread). None:
    measure unless IMGCLF_PREDICTION_LOG is off (what the service's Recorder logs to; `Recorder.measures`
    says it for any recorder). Bad input raises ImageRejected."""
    decoded = predictor.decode(data)
    if measure is None:
        measure = log_target() is not None
    return Observed(
        input=predictor.spec.normalize(decoded.pixels[None])[0],
        statistics=image_statistics(decoded.pixels) if measure else None,
        info=decoded.info,
        sha256=hashlib.sha256(data).hexdigest(),
        data=data,
    )


class Recorder:
    """One per worker: each answered image becomes a prediction log row, and an uncertain one an offer to
    the active-learning queue (run on `offload`, the decoding threads: it decodes, encodes and writes)."""

    def __init__(
        self,
        predictor: Predictor,
        stage: str | None,
        offload: Executor,
        log: PredictionLog | None = None,
        queue: LabelQueue | None = None,
    ) -> None:
        self.predictor, self.stage, self.offload = predictor, stage or None, offload
        self.log = log if log is not None else PredictionLog()
        keep = os.environ.get(LABEL_QUEUE_ENV, "on").strip().lower() not in {"off", "0", "false", "no"}
        single_label = predictor.thresholds is None  # the queue's signals need probabilities summing to 1
        self.queue = queue if queue is not None else (LabelQueue() if keep and single_label else None)

    @property
    def measures(self) -> bool:
        """Whether the images it records need their statistics (`observe(..., measure=)`): its log is on."""
        return self.log.enabled

    def record(
        self,
        observed: list[Observed],
        scores: np.ndarray,
        embeddings: np.ndarray | None,
        answers: list[dict],
        source: str,
        started: float,
    ) -> None:
        """`scores` (N, C) are the model's probabilities the answers were made from (`Predictor.scores`,
        not computed again here). `started` is the request's time.perf_counter() at arrival; one request id
        for all its images."""
        request_id = uuid.uuid4().hex
        latency_ms = 1e3 * (time.perf_counter() - started)
        for i, (item, probs, answer) in enumerate(zip(observed, scores, answers, strict=True)):
            if self.queue is not None and self.queue.policy.accepts(uncertainty(probs)):
                self.offload.submit(self._offer, item, probs)
            if self.log.enabled:
                embedding = None if embeddings is None else embeddings[i]
                self.log.append(self._row(item, answer, probs, embedding, request_id, source, latency_ms))

    def _row(
        self,
        item: Observed,
        answer: dict,
        probs: np.ndarray,
        embedding,
        request_id: str,
        source: str,
        latency_ms: float,
    ) -> PredictionRow:
        if item.statistics is None:
            raise ValueError(
                f"image {item.sha256[:12]} was observed without its statistics but the prediction log is on: "
                "observe(..., measure=recorder.measures)"
            )
        return PredictionRow.from_answer(
            answer,
            probs,
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
            embedding=embedding,
        )

    def _offer(self, item: Observed, probs: np.ndarray) -> None:
        try:
            image, _ = open_image(item.data, limits=self.predictor.limits, source="upload")
            self.queue.offer(
                image,
                sha256=item.sha256,
                probabilities=probs,
                class_names=self.predictor.class_names,
                model_version=self.predictor.model_version,
            )
        except Exception:  # the answer is already sent; a queue failure is logged, never the client's problem
            logger.exception("could not offer image %s to the label queue", item.sha256[:12])

    def close(self) -> None:
        self.log.close()
