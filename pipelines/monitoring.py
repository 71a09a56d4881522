"""`monitoring_pipeline`: the served version's traffic against its reference profile, and the drift
decision. `python -m pipelines.monitoring` (what `make monitor`, cron and .github/workflows/retrain.yml run)
runs it and, when drift is found, the training pipeline: the new version takes staging only if the
promotion rules allow, never production.

A decision artifact a runner acts on, rather than a dynamic pipeline, so the loop runs the same on every
orchestrator: the monitoring run is complete and inspectable on its own, and the retraining is an
ordinary training run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zenml import pipeline

from pipelines._run import run_with_config
from steps import judge_drift, watch_traffic

EXIT_DRIFT_NOT_RETRAINED = 3  # for cron and CI: drift was found and nothing was started
SCHEDULING_ORCHESTRATORS = "Kubernetes, Kubeflow, Airflow, Vertex, SageMaker, AzureML or Databricks"


@pipeline(enable_cache=False)
def monitoring_pipeline() -> None:
    """watch_traffic -> judge_drift."""
    window, reference, version = watch_traffic()
    judge_drift(window, reference, version)


def refuse_local_schedule(config: dict) -> None:
    """A scheduled config on the local orchestrator would run once and never again: say so and what to use."""
    from zenml.client import Client

    flavor = Client().active_stack.orchestrator.flavor
    if config.get("schedule") and flavor == "local":
        raise SystemExit(
            "the local orchestrator cannot run schedules: run this config on a stack whose orchestrator "
            f"can ({SCHEDULING_ORCHESTRATORS}), or schedule `make monitor` with cron or "
            ".github/workflows/retrain.yml (README: Monitoring)"
        )


def run_monitoring(config_path: str):
    """Run the pipeline with `config_path`; the DriftDecision of this run."""
    import yaml
    from zenml.client import Client

    config = yaml.safe_load(Path(config_path).read_text()) or {}
    refuse_local_schedule(config)
    run = monitoring_pipeline.with_options(config_path=config_path)()
    run = Client().get_pipeline_run(run.id)
    return run.steps["judge_drift"].outputs["drift_decision"][0].load()


def retrain(training_config: str, data_source: str = "") -> None:
    """The training pipeline on the current data (labels imported from the queue are in the data folder)."""
    from pipelines.training import training_pipeline

    overrides = {"data_source": data_source} if data_source else {}
    run_with_config(training_pipeline, training_config, **overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.monitoring", description=__doc__)
    parser.add_argument("-c", "--config", default="configs/monitoring.yaml")
    parser.add_argument("--retrain-config", default="configs/training.yaml", help="the training run drift starts")
    parser.add_argument("--data-source", default="", help="retrain on this data instead of the config's")
    parser.add_argument("--no-retrain", action="store_true", help="report drift, start nothing")
    args = parser.parse_args(argv)
    decision = run_monitoring(args.config)
    print(decision.summary())
    if not decision.drifted:  # also "not enough data": nothing to act on
        return 0
    if args.no_retrain:
        return EXIT_DRIFT_NOT_RETRAINED
    print(f"drift on {', '.join(decision.drifted_signals)}: retraining with {args.retrain_config}", flush=True)
    retrain(args.retrain_config, args.data_source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
