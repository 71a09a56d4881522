"""Pipelines, importable as `pipelines.training_pipeline` and `pipelines.promotion_pipeline` for
`zenml pipeline run`."""

from pipelines.promotion import promotion_pipeline
from pipelines.stack import ensure_runnable_stack
from pipelines.training import training_pipeline

ensure_runnable_stack()

__all__ = ["promotion_pipeline", "training_pipeline"]
