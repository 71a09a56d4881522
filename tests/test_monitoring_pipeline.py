"""The loop on the real local stack: serve a trained model, send it its own held-out images (no drift),
then the same images inverted (drift, on the right signals), and let the monitoring runner retrain: a
new version is registered and takes staging only if the promotion rules allow."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from PIL import Image

from conftest import ROOT, SESSION_MLFLOW_URI, fast_pipeline_run

pytestmark = pytest.mark.integration
MODEL = "imgclf-monitoring-test"  # its own registered model: the session's registry is shared with other tests


def lean(config: dict) -> None:
    """The fast training config under this test's model name, without distillation and pruning (not what
    this test is about)."""
    config["model"]["name"] = MODEL
    config["steps"]["train"]["parameters"].pop("distill_into", None)
    config["steps"]["train"]["parameters"].pop("prune", None)


@pytest.fixture(scope="module")
def served(full_digits_dir, tmp_path_factory):
    """(deployment, prediction log URL, data folder, held-out image paths)."""
    from imgclf.serving.deployment import stop

    data = tmp_path_factory.mktemp("monitor_data") / "digits"
    shutil.copytree(full_digits_dir, data)
    log = f"sqlite:///{tmp_path_factory.mktemp('log') / 'predictions.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("IMGCLF_PREDICTION_LOG", log)  # the service the pipeline deploys logs here
        env.setenv("IMGCLF_LABEL_QUEUE", "off")
        with fast_pipeline_run(data, tmp_path_factory.mktemp("config"), lean, stop_service=False) as run:
            deployment = run.steps["deploy"].outputs["deployment"][0].load()
            manifest = run.steps["split"].outputs["split_manifest"][0].load()
            held_out = [Path(manifest.root) / p for p in manifest.subset("test").records["path"]]
            yield deployment, log, data, held_out
            stop(deployment.pid)


def send(url: str, images: list[bytes]) -> None:
    for data in images:
        response = requests.post(f"{url}/predict", files={"image": ("x.png", data, "image/png")}, timeout=60)
        assert response.status_code == 200, response.text


def inverted(path: Path) -> bytes:
    import io

    out = io.BytesIO()
    Image.fromarray(255 - np.asarray(Image.open(path).convert("RGB"))).save(out, format="PNG")
    return out.getvalue()


def monitoring_config(tmp_path: Path, log: str, rows: int) -> str:
    config = {
        "model_name": MODEL,
        "stage": "staging",
        "log_url": log,
        "last": rows,
        "drift": {"min_rows": 50},
    }
    path = tmp_path / "monitoring.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "enable_cache": False,
                "steps": {s: {"parameters": {"config": config}} for s in ("watch_traffic", "judge_drift")},
            }
        )
    )
    return str(path)


def wait_for_rows(log: str, count: int) -> None:
    import time

    from imgclf.monitoring.log import read_window

    deadline = time.monotonic() + 30
    while len(read_window(log)) < count and time.monotonic() < deadline:
        time.sleep(0.3)
    assert len(read_window(log)) == count, "the log holds one row per answered request"


def test_held_out_traffic_is_no_drift_and_inverted_traffic_is_drift_then_retraining_runs(served, tmp_path):
    import mlflow
    from zenml.client import Client

    from pipelines.monitoring import main

    deployment, log, data, held_out = served
    send(deployment.url, [p.read_bytes() for p in held_out])
    wait_for_rows(log, len(held_out))
    config = monitoring_config(tmp_path, log, len(held_out))
    assert main(["-c", config, "--no-retrain"]) == 0
    judged = Client().get_pipeline("monitoring_pipeline").last_run.steps["judge_drift"]
    assert judged.run_metadata["drift_detected"] is False and judged.run_metadata["window_rows"] == len(held_out)

    send(deployment.url, [inverted(p) for p in held_out])
    wait_for_rows(log, 2 * len(held_out))
    assert main(["-c", config, "--no-retrain"]) == 3, "drift found, nothing started"
    decision = (
        Client().get_pipeline("monitoring_pipeline").last_run.steps["judge_drift"].outputs["drift_decision"][0].load()
    )
    assert decision.drifted and "image_statistics" in decision.drifted_signals
    brightness = next(s for s in decision.signals if s.signal == "image_statistics").columns["brightness"]
    assert brightness < 1e-6

    client = mlflow.MlflowClient(tracking_uri=SESSION_MLFLOW_URI)
    before = {v.version for v in client.search_model_versions(f"name='{MODEL}'")}
    training = yaml.safe_load((ROOT / "configs" / "training_fast.yaml").read_text())
    lean(training)
    training["parameters"]["data_source"] = str(data)
    training["steps"]["deploy"]["parameters"]["config"]["port"] = int(deployment.url.rsplit(":", 1)[1])
    (tmp_path / "training.yaml").write_text(yaml.safe_dump(training))
    assert main(["-c", config, "--retrain-config", str(tmp_path / "training.yaml")]) == 0
    retrained = Client().get_pipeline("training_pipeline").last_run
    new = {v.version for v in client.search_model_versions(f"name='{MODEL}'")} - before
    assert len(new) == 1, "drift started one training run, which registered one version"
    record = retrained.steps["promote"].outputs["promotion_record"][0].load()
    staging = client.get_model_version_by_alias(MODEL, "staging").version
    assert (staging in new) == record.moved, record.summary()
    production = [v for v in client.search_model_versions(f"name='{MODEL}'") if "production" in v.aliases]
    assert not any(v.version in new for v in production), "retraining never reaches production"
    new_deployment = retrained.steps["deploy"].outputs["deployment"][0].load()
    if new_deployment.pid and new_deployment.pid != deployment.pid:
        from imgclf.serving.deployment import stop

        stop(new_deployment.pid)


def test_a_schedule_on_the_local_orchestrator_is_refused_with_the_alternatives():
    import runpy

    from pipelines.monitoring import main

    runpy.run_path(str(ROOT / "infra" / "local_stack.py"))["ensure_local_stack"]()
    with pytest.raises(SystemExit) as refused:
        main(["-c", str(ROOT / "configs" / "monitoring_schedule.yaml")])
    message = str(refused.value)
    assert "local orchestrator cannot run schedules" in message and "Kubernetes" in message and "cron" in message
