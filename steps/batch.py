"""The batch inference steps: resolve the model, plan the shards, classify one shard (one invocation per
shard: N pods on Kubernetes), gather and count. Each calls imgclf.batch."""

from __future__ import annotations

import tempfile
from typing import Annotated

import pandas as pd
from zenml import get_step_context, log_metadata, step
from zenml.client import Client
from zenml.logger import get_logger

from imgclf.batch.classify import classify_shard, load_predictor
from imgclf.batch.config import BatchConfig, ResolvedModel, resolve_model
from imgclf.batch.gather import BatchSummary, merge, write_merged
from imgclf.batch.inputs import list_inputs
from imgclf.batch.shards import ShardPlan, plan_shards
from imgclf.registry import fetch_bundle

logger = get_logger(__name__)
SHARD_STEP_PREFIX = "classify_"
PREDICTIONS, MONITORING = "shard_predictions", "shard_monitoring"


def _tracking_uri() -> str | None:
    tracker = Client().active_stack.experiment_tracker
    return tracker.get_tracking_uri() if tracker is not None else None


@step
def resolve_batch_model(config: BatchConfig = BatchConfig()) -> Annotated[ResolvedModel, "batch_model"]:
    """The version the config's models:/ URI names now, pinned for every shard."""
    model = resolve_model(config.model_uri, _tracking_uri())
    logger.info("batch model: %s version %s (%s)", model.name, model.version, model.stage or "by number")
    return model


@step
def plan_batch(input: str, shards: int) -> Annotated[ShardPlan, "shard_plan"]:
    """Every input file listed, split into `shards` contiguous shards."""
    plan = plan_shards(list_inputs(input), shards)
    logger.info("%d inputs (%s) in %d shards", plan.total, plan.source.kind, len(plan.shards))
    log_metadata(metadata={"inputs": plan.total, "input_kind": plan.source.kind, "shards": len(plan.shards)})
    return plan


@step
def classify_batch_shard(
    plan: ShardPlan, model: ResolvedModel, index: int, config: BatchConfig = BatchConfig()
) -> tuple[Annotated[pd.DataFrame, PREDICTIONS], Annotated[pd.DataFrame, MONITORING]]:
    """Shard `index` classified with the pinned version's serving model (fetched into this step's process)."""
    settings = config.classify.model_copy(update={"model_stage": model.stage})
    with tempfile.TemporaryDirectory(prefix="imgclf-batch-model-") as tmp:
        bundle, version = fetch_bundle(model.uri, tmp, _tracking_uri())
        output = classify_shard(plan.source, plan.shard(index), load_predictor(bundle, version, settings), settings)
    if config.log_url:
        _append_to_log(config.log_url, output.rows)
    rejected = int((output.predictions["status"] == "rejected").sum())
    logger.info("shard %d: %d inputs, %d rejected", index, len(output.predictions), rejected)
    return output.predictions, output.monitoring


def _append_to_log(url: str, rows) -> None:
    """Appended and committed before the step ends (close() drains the writer's queue)."""
    from imgclf.monitoring.log import PredictionLog

    with PredictionLog(url, queue_size=max(10_000, len(rows) + 1)) as log:
        for row in rows:
            log.append(row)


@step(enable_cache=False)
def gather_batch(
    plan: ShardPlan, config: BatchConfig = BatchConfig()
) -> tuple[Annotated[pd.DataFrame, "batch_predictions"], Annotated[BatchSummary, "batch_summary"]]:
    """The shards of this run merged and counted: every input predicted or rejected with a reason, else it fails."""
    context = get_step_context()
    run = Client().get_pipeline_run(context.pipeline_run.id)
    names = [f"{SHARD_STEP_PREFIX}{i}" for i in range(len(plan.shards))]
    missing = [name for name in names if name not in run.steps]
    if missing:
        raise RuntimeError(f"the shard steps {missing} did not run in this pipeline run")
    predictions = [run.steps[name].outputs[PREDICTIONS][0].load() for name in names]
    monitoring = [run.steps[name].outputs[MONITORING][0].load() for name in names]
    merged, logged, summary = merge(plan, predictions, monitoring)
    summary = write_merged(config.output_folder(context.pipeline_run.name), merged, logged, summary)
    logger.info("%s; written to %s", summary.line(), summary.predictions_path)
    log_metadata(metadata={k: v for k, v in summary.model_dump().items() if v is not None and k != "model_versions"})
    return merged, summary
