"""All shards of a plan on this machine: one worker process per shard at a time, each with a
single-threaded ORT session (what N pods do on Kubernetes, on one host). Shards come back as the parquet
files they write, not as pickled objects."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from imgclf.batch.classify import ClassifySettings, classify_shard, load_predictor
from imgclf.batch.shards import ShardPlan


def _classify_one(plan_json: str, index: int, bundle: str, version: str, settings_json: str, out: str) -> int:
    plan = ShardPlan.model_validate_json(plan_json)
    settings = ClassifySettings.model_validate_json(settings_json)
    output = classify_shard(plan.source, plan.shard(index), load_predictor(bundle, version, settings), settings)
    output.write(out)
    return len(output.predictions)


def classify_in_processes(
    plan: ShardPlan,
    bundle: str | Path,
    model_version: str,
    out: str | Path,
    workers: int,
    settings: ClassifySettings = ClassifySettings(threads=1),
) -> int:
    """Every shard of `plan` classified by `workers` spawned processes into `out` (read it back with
    gather.read_shards). Returns the number of prediction rows written."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    args = (plan.model_dump_json(), str(bundle), model_version, settings.model_dump_json(), str(out))
    context = multiprocessing.get_context("spawn")  # no ORT thread pool or log writer inherited through fork
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(_classify_one, args[0], i, *args[1:]) for i in range(len(plan.shards))]
        return sum(f.result() for f in futures)
