"""Pipelines, importable as `pipelines.training_pipeline` for `zenml pipeline run`."""

from pipelines.stack import ensure_runnable_stack
from pipelines.training import training_pipeline

ensure_runnable_stack()

__all__ = ["training_pipeline"]
