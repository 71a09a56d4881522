"""The whole training_pipeline on a tiny real data set (digits, 30 per class, plus one broken file),
on the embedded stack in this test session's own ZenML store and MLflow database."""

from __future__ import annotations

import shutil

import mlflow
import numpy as np
import pytest
import requests

from conftest import SESSION_MLFLOW_URI, fast_pipeline_run

pytestmark = pytest.mark.integration

STEPS = ["ingest", "validate", "split", "augment", "train", "evaluate", "quantize", "register", "promote", "deploy"]


@pytest.fixture(scope="module")
def pipeline_run(digits_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("pipeline_data") / "digits"
    shutil.copytree(digits_dir, data)
    (data / "2" / "broken.png").write_text("not an image at all")
    with fast_pipeline_run(data, tmp_path_factory.mktemp("config")) as run:
        yield run


def test_all_steps_completed(pipeline_run):
    from zenml.enums import ExecutionStatus

    assert pipeline_run.status == ExecutionStatus.COMPLETED
    assert sorted(pipeline_run.steps) == sorted(STEPS)
    assert all(step.status == ExecutionStatus.COMPLETED for step in pipeline_run.steps.values())


def test_the_distilled_and_pruned_model_is_what_ships(pipeline_run):
    meta = pipeline_run.steps["train"].run_metadata
    assert meta["shipped_arch"] == "mobilenetv3_small_050"
    assert (
        meta["prune_params_after"] < meta["prune_params_before"]
        and meta["prune_macs_after"] < meta["prune_macs_before"]
    )
    shipped = pipeline_run.steps["train"].outputs["trained_model"][0].load()
    assert shipped.arch == "mobilenetv3_small_050" and shipped.structure  # rebuilt from JSON, no pickle
    assert sum(p.numel() for p in shipped.build().parameters()) == meta["prune_params_after"]
    assert "distill_report" in shipped.info and "prune_report" in shipped.info
    registered = pipeline_run.steps["register"].outputs["registered_model"][0].load()
    from imgclf.models.trained import TrainedModel
    from imgclf.registry import fetch_bundle

    bundle, _ = fetch_bundle(registered.model_uri, tracking_uri=SESSION_MLFLOW_URI)
    assert TrainedModel.load(bundle).structure == shipped.structure


def test_train_records_what_it_trained_at(pipeline_run):
    meta = pipeline_run.steps["train"].run_metadata
    assert (meta["image_size"], meta["epochs_planned"]) == (32, 1)  # training_fast.yaml gives both
    assert meta["budget"] == {}  # nothing was left to decide from the data


def test_validate_accounts_for_every_file(pipeline_run):
    meta = pipeline_run.steps["validate"].run_metadata
    assert (meta["received"], meta["kept"], meta["quarantined"]) == (301, 300, 1)
    quarantine = pipeline_run.steps["validate"].outputs["quarantine"][0].load()
    assert quarantine.records.to_dict("records") == [
        {"path": "2/broken.png", "reason": "not_an_image", "detail": "no known image format in the file's bytes"}
    ]


def test_evaluation_metadata_and_mlflow_registration(pipeline_run):
    meta = pipeline_run.steps["evaluate"].run_metadata
    assert 0 <= meta["test_accuracy"] <= 1 and 0 <= meta["test_macro_f1"] <= 1
    assert meta["test_accuracy_ci_low"] <= meta["test_accuracy"] <= meta["test_accuracy_ci_high"]
    assert meta["test_macro_f1_ci_low"] <= meta["test_macro_f1_ci_high"]
    assert 0 <= meta["test_ece"] <= 1 and meta["latency_p50_ms"] > 0
    registered = pipeline_run.steps["register"].outputs["registered_model"][0].load()
    version = mlflow.MlflowClient(tracking_uri=SESSION_MLFLOW_URI).get_model_version(
        "image-classifier", registered.version
    )
    assert version.tags["zenml_model_version"] == str(pipeline_run.model_version.number)
    assert float(version.tags["test_accuracy"]) == pytest.approx(meta["test_accuracy"], abs=1e-4)
    assert pipeline_run.model_version.run_metadata["mlflow_model_version"] == registered.version


def test_report_and_model_card_reach_zenml_and_mlflow(pipeline_run):
    evaluate = pipeline_run.steps["evaluate"]
    report = evaluate.outputs["evaluation"][0].load()
    page = str(evaluate.outputs["evaluation_report"][0].load())
    assert page.startswith("<!DOCTYPE html>") and page.count('src="data:image/png;base64,') == 6
    assert f"{report.accuracy:.4f} [{report.accuracy_ci_low:.4f}, {report.accuracy_ci_high:.4f}]" in page
    assert "no staging or production model in the registry" in report.comparison_note
    card = str(pipeline_run.model_version.get_artifact("model_card").load())
    assert card.startswith(f"# Model card: image-classifier (version {pipeline_run.model_version.number})")
    assert f"{report.accuracy:.4f} [{report.accuracy_ci_low:.4f}, {report.accuracy_ci_high:.4f}]" in card
    registered = pipeline_run.steps["register"].outputs["registered_model"][0].load()
    client = mlflow.MlflowClient(tracking_uri=SESSION_MLFLOW_URI)
    assert client.get_model_version("image-classifier", registered.version).description == card
    run_id = client.get_model_version("image-classifier", registered.version).run_id
    logged = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for a in client.list_artifacts(run_id, "evaluation")
    }
    assert {"model_card.md", "evaluation/report.html", "evaluation/figures"} <= logged


def test_summary_points_at_the_report_and_card(pipeline_run, tmp_path, monkeypatch, capsys):
    from imgclf.cli import main

    monkeypatch.setenv("IMGCLF_STATE", str(tmp_path))
    mlflow.set_tracking_uri(SESSION_MLFLOW_URI)
    assert main(["summary", "--model-name", "image-classifier"]) == 0
    out = capsys.readouterr().out
    report = (
        tmp_path / "reports" / f"image-classifier-v{pipeline_run.model_version.run_metadata['mlflow_model_version']}"
    )
    assert f"Evaluation report: {(report / 'report.html').resolve()}" in out
    assert (report / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert (report / "model_card.md").read_text().startswith("# Model card: image-classifier")


def test_onnx_artifact_agrees_with_torch(pipeline_run):
    from imgclf.data.cache import decoded_images
    from imgclf.export.onnx import onnx_logits
    from imgclf.inference import predict_logits

    model = pipeline_run.steps["train"].outputs["trained_model"][0].load()
    exported = pipeline_run.steps["quantize"].outputs["onnx_model"][0].load()
    manifest = pipeline_run.steps["split"].outputs["split_manifest"][0].load()
    images = decoded_images(manifest.subset("test"), model.preprocess)
    torch_logits = predict_logits(model.build(), images, model.preprocess)
    onnx_out = onnx_logits(exported.onnx, images, model.preprocess)
    assert np.abs(torch_logits - onnx_out).max() < 1e-3
    assert (torch_logits.argmax(1) == onnx_out.argmax(1)).all()


def test_deploy_serves_the_registered_version(pipeline_run, digits_dir):
    deployment = pipeline_run.steps["deploy"].outputs["deployment"][0].load()
    registered = pipeline_run.steps["register"].outputs["registered_model"][0].load()
    assert deployment.status == "running" and deployment.url.startswith("http://127.0.0.1:")
    image = next((digits_dir / "4").iterdir()).read_bytes()
    response = requests.post(f"{deployment.url}/predict", files={"image": ("4.png", image, "image/png")}, timeout=30)
    assert response.status_code == 200
    assert response.json()["model_version"] == registered.version
