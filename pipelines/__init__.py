"""Pipelines, importable as `pipelines.training_pipeline` for `zenml pipeline run`."""

from pipelines.training import training_pipeline

__all__ = ["training_pipeline"]
