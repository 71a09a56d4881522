"""`batch_inference_pipeline`: classify a folder, manifest, archive or bucket prefix of images with a
registered model (default the `production` version, its serving ONNX file: the INT8 model when it won).

resolve_batch_model -> plan_batch -> classify_0 .. classify_{N-1} -> gather_batch. The fan-out is fixed
when the pipeline is defined (`shards`), one step invocation per shard with no edges between them, so an
orchestrator that runs steps in parallel runs the shards in parallel (Kubernetes: one pod per shard); the
local orchestrator runs them one after another. `python -m pipelines.batch_inference --input PATH` is
what `make batch-inference INPUT=PATH` runs."""

from __future__ import annotations

import argparse
import sys

from zenml import pipeline

from imgclf.batch.config import BatchConfig
from pipelines._run import run_with_config
from steps.batch import SHARD_STEP_PREFIX, classify_batch_shard, gather_batch, plan_batch, resolve_batch_model


@pipeline(enable_cache=False)
def batch_inference_pipeline(input: str, shards: int = 4, config: BatchConfig = BatchConfig()) -> None:
    """Every file of `input` predicted or rejected with a reason, in `shards` parallel steps. `config` is a
    pipeline parameter, not per step: the shard steps' names depend on `shards`."""
    model = resolve_batch_model(config)
    plan = plan_batch(input, shards)
    names = []
    for i in range(shards):
        classify_batch_shard(plan, model, i, config, id=f"{SHARD_STEP_PREFIX}{i}")
        names.append(f"{SHARD_STEP_PREFIX}{i}")
    gather_batch(plan, config, after=names)


def run_batch(config_path: str, **parameters):
    """The pipeline run with `config_path` (its `parameters` replaced by the given ones); the BatchSummary."""
    from zenml.client import Client

    run = run_with_config(batch_inference_pipeline, config_path, **parameters)
    run = Client().get_pipeline_run(run.id)
    return run.steps["gather_batch"].outputs["batch_summary"][0].load()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.batch_inference", description=__doc__)
    parser.add_argument("-c", "--config", default="configs/batch_inference.yaml")
    parser.add_argument("--input", default="", help="folder, manifest (.csv/.txt), archive or bucket prefix")
    parser.add_argument("--shards", type=int, default=None, help="instead of the config's")
    args = parser.parse_args(argv)
    overrides = {"input": args.input} if args.input else {}
    if args.shards is not None:
        overrides["shards"] = args.shards
    summary = run_batch(args.config, **overrides)
    print(summary.line())
    print(f"predictions: {summary.predictions_path}\nmonitoring rows: {summary.monitoring_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
