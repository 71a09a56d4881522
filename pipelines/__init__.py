"""Pipelines, importable as `pipelines.training_pipeline`, `pipelines.promotion_pipeline`,
`pipelines.monitoring_pipeline` and `pipelines.batch_inference_pipeline` for `zenml pipeline run`."""

from pipelines.batch_inference import batch_inference_pipeline
from pipelines.monitoring import monitoring_pipeline
from pipelines.promotion import promotion_pipeline
from pipelines.stack import ensure_runnable_stack
from pipelines.training import training_pipeline

ensure_runnable_stack()

__all__ = ["batch_inference_pipeline", "monitoring_pipeline", "promotion_pipeline", "training_pipeline"]
