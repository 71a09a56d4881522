"""A demonstration of a model's life through the stages, in a throwaway state folder (its own ZenML
store, MLflow database and services, so a checkout's own registry is left alone):

    python bench/model_lifecycle.py                 # the README's "Staging and production" table
    python bench/model_lifecycle.py --keep DIR      # keep the state in DIR (look at it with the MLflow UI)

v1 trains (resnet10t from scratch, 32 px, 8 epochs, on the full digits) and takes staging; the promotion
pipeline moves it to production; v2, trained with a learning rate too small to learn, is refused
staging by the paired test; v3 takes staging and then production; `imgclf rollback production`
restores v1. After each step it prints the decision and `imgclf stages` (which also checks that ZenML's
stages agree with the MLflow aliases), and at the end the whole audit trail.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import tempfile
import time
from pathlib import Path

from common import free_port

ROOT = Path(__file__).resolve().parents[1]
NAME = "image-classifier"
TRACKING_URI = [""]  # set by isolate()


def isolate(state: Path) -> None:
    """What infra/env.sh sets, pointed at `state`; before zenml or mlflow is imported."""
    TRACKING_URI[0] = f"sqlite:///{state / 'mlflow' / 'mlflow.db'}"
    os.environ.update(
        IMGCLF_STATE=str(state),
        ZENML_CONFIG_PATH=str(state / "zenml"),
        MLFLOW_TRACKING_URI=TRACKING_URI[0],
        IMGCLF_CACHE_DIR=str(state / "cache"),
        BENTOML_HOME=str(state / "bentoml"),
        ZENML_ANALYTICS_OPT_IN="false",
        AUTO_OPEN_DASHBOARD="false",
        BENTOML_DO_NOT_TRACK="True",
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        GX_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="true",
    )


def train(data: Path, folder: Path, seed: int, lr: float, port: int):
    import yaml
    from zenml.client import Client

    from pipelines import training_pipeline

    config = yaml.safe_load((ROOT / "configs" / "training_fast.yaml").read_text())
    config["parameters"]["data_source"] = str(data)
    params = config["steps"]["train"]["parameters"]
    del params["distill_into"], params["prune"]
    params["config"].update(epochs=8, seed=seed, lr=lr)
    config["steps"]["deploy"]["parameters"]["config"]["port"] = port
    path = folder / f"train-{seed}.yaml"
    path.write_text(yaml.safe_dump(config))
    training_pipeline.with_options(config_path=str(path))()
    run = Client().get_pipeline("training_pipeline").last_run
    return run.steps["promote"].outputs["promotion_record"][0].load()


def promote_production(version: str, folder: Path, port: int) -> int:
    import yaml

    from pipelines.promotion import main

    config = yaml.safe_load((ROOT / "configs" / "promote_production.yaml").read_text())
    config["steps"]["deploy"]["parameters"]["config"]["port"] = port
    path = folder / f"promote-{version}.yaml"
    path.write_text(yaml.safe_dump(config))
    return main(["--version", version, "-c", str(path)])


def cli(*args: str) -> int:
    """`imgclf ARGS` in this process; ZenML's MLflow tracker unsets the tracking URI after each step."""
    import mlflow

    from imgclf.cli import main

    os.environ["MLFLOW_TRACKING_URI"] = TRACKING_URI[0]
    mlflow.set_tracking_uri(TRACKING_URI[0])
    return main(list(args))


def step(title: str, action):
    """Run one step of the life, print its promotion record (if it returns one) and the stages after it."""
    started = time.monotonic()
    result = action()
    if hasattr(result, "to_markdown"):
        print(result.to_markdown())
    print(f"\n### {title}  ({time.monotonic() - started:.0f} s)\n", flush=True)
    cli("stages")
    return result


def run(state: Path) -> None:
    isolate(state)
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    runpy.run_path(str(ROOT / "infra" / "local_stack.py"))["ensure_local_stack"]()
    from imgclf.data.digits import write_digits
    from imgclf.serving.deployment import stop_recorded

    data = ROOT / "data" / "digits"  # `make data`: its DVC hash is the data version the moves record
    if not data.is_dir():
        data = state / "digits"
        write_digits(data)
    ports = {"staging": free_port(), "production": free_port()}
    try:
        v1 = step("v1 trained", lambda: train(data, state, seed=1, lr=3e-3, port=ports["staging"]))
        step(
            f"v{v1.candidate_version} promoted to production",
            lambda: promote_production(v1.candidate_version, state, ports["production"]),
        )
        step(
            "v2 (learning rate too small to learn) trained",
            lambda: train(data, state, seed=2, lr=1e-7, port=ports["staging"]),
        )
        v3 = step("v3 trained", lambda: train(data, state, seed=3, lr=3e-3, port=ports["staging"]))
        step(
            f"v{v3.candidate_version} promoted to production",
            lambda: promote_production(v3.candidate_version, state, ports["production"]),
        )
        step("production rolled back", lambda: cli("rollback", "production", "--reason", "demonstration rollback"))
        print_trail()
    finally:
        for port in ports.values():
            stop_recorded(port)


def print_trail() -> None:
    from imgclf.registry import stage_history

    print(
        "\n### The audit trail\n\n| # | stage | kind | from | to | by | data version |\n|---|---|---|---|---|---|---|"
    )
    for m in stage_history(NAME, TRACKING_URI[0]):
        cells = [m.seq, m.stage, m.kind, m.from_version or "-", m.to_version or "-", m.by, m.data_version]
        print("| " + " | ".join(map(str, cells)) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="state folder to keep (default: a temp folder, removed)")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        run(args.keep.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="imgclf-lifecycle-") as tmp:
            run(Path(tmp))
