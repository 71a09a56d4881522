"""Pipelines, importable as `pipelines.training_pipeline`, `pipelines.promotion_pipeline` and
`pipelines.monitoring_pipeline` for `zenml pipeline run`."""

from pipelines.monitoring import monitoring_pipeline
from pipelines.promotion import promotion_pipeline
from pipelines.stack import ensure_runnable_stack
from pipelines.training import training_pipeline

ensure_runnable_stack()

__all__ = ["monitoring_pipeline", "promotion_pipeline", "training_pipeline"]
