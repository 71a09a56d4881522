"""`promotion_pipeline`: the staging version to production, by the rules, and the production service
redeployed. `python -m pipelines.promotion --version N` runs it and exits 1 when production did not move."""

from __future__ import annotations

import argparse
import sys

from zenml import pipeline

from pipelines._run import run_with_config
from steps import deploy, promote_production


@pipeline(enable_cache=False)
def promotion_pipeline(version: str = "", model_name: str = "image-classifier", data_root: str = "") -> None:
    """promote_production -> deploy (the production service, when production moved)."""
    record = promote_production(version, model_name, data_root=data_root)
    deploy(record)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.promotion", description=__doc__)
    parser.add_argument("--version", required=True, help="the version that holds staging")
    parser.add_argument("-c", "--config", default="configs/promote_production.yaml")
    args = parser.parse_args(argv)
    from zenml.client import Client

    run = run_with_config(promotion_pipeline, args.config, version=args.version)
    run = Client().get_pipeline_run(run.id)  # this run, whatever else ran on the store meanwhile
    record = run.steps["promote_production"].outputs["promotion_record"][0].load()
    print(record.to_markdown())
    return 0 if record.moved else 1


if __name__ == "__main__":
    sys.exit(main())
