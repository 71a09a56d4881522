"""The service's own Prometheus metrics, served at /metrics beside BentoML's.

They are created on first use inside a worker, after BentoML has set PROMETHEUS_MULTIPROC_DIR, so every
worker writes to the shared multiprocess files and /metrics adds them up (created at import time they
would live in one process only and never be shown)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class ServiceMetrics:
    predictions: Any  # Counter by top-1 label
    confidence: Any  # Histogram of top-1 confidence
    rejections: Any  # Counter by reason (guard refusals and unusable images)
    url_fetches: Any  # Counter by outcome ("ok" or the fetcher's refusal reason)
    batch_size: Any  # Histogram of images per model call
    model: Any  # Gauge set to 1, labelled with the version served


@cache
def service_metrics() -> ServiceMetrics:
    from prometheus_client import Counter, Gauge, Histogram

    return ServiceMetrics(
        predictions=Counter("imgclf_predictions", "Predictions answered, by top-1 label", ["label"]),
        confidence=Histogram(
            "imgclf_confidence", "Top-1 confidence of answered predictions", buckets=CONFIDENCE_BUCKETS
        ),
        rejections=Counter("imgclf_rejections", "Requests or images refused, by reason", ["reason"]),
        url_fetches=Counter("imgclf_url_fetches", "Image-URL fetches, by outcome", ["outcome"]),
        batch_size=Histogram("imgclf_batch_size", "Images per model call", buckets=BATCH_BUCKETS),
        model=Gauge("imgclf_model_info", "The model served (always 1)", ["version"], multiprocess_mode="max"),
    )


def record_model(version: str) -> None:
    service_metrics().model.labels(version=version).set(1)


def record_prediction(result: dict) -> None:
    metrics = service_metrics()
    metrics.predictions.labels(label=str(result["label"])).inc()
    metrics.confidence.observe(float(result["confidence"]))


def record_rejection(reason: str) -> None:
    service_metrics().rejections.labels(reason=reason).inc()


def record_url_fetch(outcome: str) -> None:
    service_metrics().url_fetches.labels(outcome=outcome).inc()


def record_batch(size: int) -> None:
    service_metrics().batch_size.observe(size)
