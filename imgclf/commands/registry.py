"""`imgclf promote` and `summary`: the MLflow registry from the command line."""

from __future__ import annotations

import argparse

from imgclf import paths


def promote(args: argparse.Namespace) -> int:
    """Point a registry alias at a version: the next pipeline run compares its new model with it."""
    from imgclf.registry import resolve_version, set_alias

    name, version = resolve_version(args.model)
    previous = set_alias(name, version, args.alias)
    print(f"models:/{name}@{args.alias} -> version {version}" + (f" (was {previous})" if previous else " (new alias)"))
    return 0


def summary(args: argparse.Namespace) -> int:
    """The latest registered version, its headline metrics, and where its report and card are."""
    from imgclf import registry

    found = registry.version_info(args.model_name)
    print(f"\nRegistered models:/{found.name}/{found.version}  (MLflow run {found.run_id})")
    for key in ("test_accuracy", "test_macro_f1"):
        if key in found.tags:
            print(f"  {key} = {found.tags[key]}")
    reports = paths.reports_dir() / f"{found.name}-v{found.version}"
    for label, artifact in (("Evaluation report", "evaluation/report.html"), ("Model card", "model_card.md")):
        local = registry.download_run_file(found.run_id, artifact, reports)
        print(f"{label}: {local}" if local else f"{label}: not logged by run {found.run_id}")
    print(f"MLflow UI:      mlflow ui --backend-store-uri {registry.tracking_uri()}")
    print("ZenML dashboard: zenml login --local   (runs, artifacts and visualisations)")
    print(f"Serve it:       make serve   (or: imgclf serve --model models:/{found.name}/{found.version})")
    return 0
