"""The batch inference pipeline on the real local stack: a registered version reached through its
`production` alias classifies a folder of digits with a truncated PNG and a text file in 3 shard steps,
and every input file comes back, predicted or rejected with its reason."""

from __future__ import annotations

import runpy
import shutil

import pandas as pd
import pytest
import yaml

from conftest import ROOT, SESSION_MLFLOW_URI

pytestmark = pytest.mark.integration
MODEL = "imgclf-batch-test"  # its own registered model: the session's registry is shared with other tests


@pytest.fixture(scope="module")
def production_version(servable_bundle, tmp_path_factory) -> str:
    """`servable_bundle` registered in the session's registry (artifacts in a temp folder, not ./mlruns) and
    given `production`."""
    import mlflow

    from imgclf.registry import register_bundle

    mlflow.set_tracking_uri(SESSION_MLFLOW_URI)
    client = mlflow.MlflowClient(tracking_uri=SESSION_MLFLOW_URI)
    artifacts = tmp_path_factory.mktemp("batch_registry").as_uri()
    mlflow.set_experiment(experiment_id=client.create_experiment("batch-test", artifact_location=artifacts))
    version = register_bundle(servable_bundle, MODEL).version
    client.set_registered_model_alias(MODEL, "production", version)
    return version


def test_every_input_file_is_predicted_or_rejected_with_a_reason(production_version, digits_dir, tmp_path):
    from zenml.client import Client

    from imgclf.monitoring.log import read_window
    from imgclf.monitoring.record import COLUMNS

    runpy.run_path(str(ROOT / "infra" / "local_stack.py"))["ensure_local_stack"]()
    images = tmp_path / "images"
    for digit in ("1", "7"):
        shutil.copytree(digits_dir / digit, images / digit)
    good = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.png"))
    (images / "broken").mkdir()
    whole = (images / good[0]).read_bytes()
    (images / "broken" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (images / "broken" / "readme.txt").write_text("not an image\n")
    config = yaml.safe_load((ROOT / "configs" / "batch_inference.yaml").read_text())
    log = f"sqlite:///{tmp_path / 'predictions.db'}"
    config["parameters"]["config"].update(
        model_uri=f"models:/{MODEL}@production", output_dir=str(tmp_path / "out"), log_url=log
    )
    (tmp_path / "batch.yaml").write_text(yaml.safe_dump(config))

    from pipelines.batch_inference import main

    assert main(["-c", str(tmp_path / "batch.yaml"), "--input", str(images), "--shards", "3"]) == 0
    run = Client().get_pipeline("batch_inference_pipeline").last_run
    assert {f"classify_{i}" for i in range(3)} <= set(run.steps), "one step per shard"
    summary = run.steps["gather_batch"].outputs["batch_summary"][0].load()
    predictions = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert sorted(predictions["file"]) == sorted([*good, "broken/truncated.png", "broken/readme.txt"])
    assert summary.total == len(good) + 2 and summary.predicted == len(good) and summary.rejected == 2
    reasons = predictions.set_index("file")["error_reason"]
    assert reasons["broken/readme.txt"] == "not_an_image" and reasons["broken/truncated.png"] == "truncated"
    predicted = predictions[predictions["status"] == "predicted"]
    assert set(predicted["model_version"]) == {production_version}
    assert (predicted["label"] == predicted["file"].str[0]).mean() > 0.8  # the digits' own folders
    assert sorted(predicted["shard"].unique()) == [0, 1, 2]
    monitoring = pd.read_parquet(tmp_path / "out" / "monitoring.parquet")
    assert list(monitoring.columns) == list(COLUMNS) and len(monitoring) == len(good)
    logged = read_window(log)
    assert len(logged) == len(good) and set(logged["source"]) == {"batch"}
    assert set(logged["model_stage"]) == {"production"} and set(logged["sha256"]) == set(predicted["sha256"])
