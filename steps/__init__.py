"""One ZenML step per file, thin: parse typed config, call imgclf, log, return typed artifacts."""

import materializers  # noqa: F401  (registers the project's materializers)
from imgclf.logs import quiet_third_party
from steps.augment import augment
from steps.batch import classify_batch_shard, gather_batch, plan_batch, resolve_batch_model
from steps.deploy import deploy
from steps.evaluate import evaluate
from steps.ingest import ingest
from steps.monitor import judge_drift, watch_traffic
from steps.promote import promote
from steps.promote_production import promote_production
from steps.quantize import quantize
from steps.register import register
from steps.split import split
from steps.train import train
from steps.validate import validate

quiet_third_party()

__all__ = [
    "augment",
    "classify_batch_shard",
    "deploy",
    "evaluate",
    "gather_batch",
    "ingest",
    "judge_drift",
    "plan_batch",
    "promote",
    "promote_production",
    "quantize",
    "register",
    "resolve_batch_model",
    "split",
    "train",
    "validate",
    "watch_traffic",
]
