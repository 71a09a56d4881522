"""MLflow registry round trip: register a bundle, resolve latest / alias, fetch it back, load as pyfunc."""

from __future__ import annotations

import mlflow
import pytest

from imgclf.bundle import ONNX_FILE
from imgclf.export.onnx import export_onnx
from imgclf.registry import fetch_bundle, register_bundle, resolve_version
from imgclf.serving.predictor import Predictor


def test_register_and_fetch_round_trip(small_model, tmp_path, mlflow_uri):
    trained, manifest = small_model
    bundle = trained.save(tmp_path / "bundle")
    (bundle / ONNX_FILE).write_bytes(export_onnx(trained))
    first = register_bundle(bundle, "digits-test", tags={"test_accuracy": "0.99"})
    second = register_bundle(bundle, "digits-test")
    assert (first.version, second.version) == ("1", "2") and second.model_uri == "models:/digits-test/2"
    assert mlflow.MlflowClient().get_model_version("digits-test", "1").tags["test_accuracy"] == "0.99"

    assert resolve_version("models:/digits-test/latest") == ("digits-test", "2")
    mlflow.MlflowClient().set_registered_model_alias("digits-test", "production", "1")
    assert resolve_version("models:/digits-test@production") == ("digits-test", "1")

    fetched, version = fetch_bundle("models:/digits-test@production", tmp_path / "fetched")
    assert version == "1"
    assert (fetched / "model.safetensors").read_bytes() == (bundle / "model.safetensors").read_bytes()
    image = manifest.absolute_paths()[0].read_bytes()
    assert Predictor.from_path(fetched).predict(image)["top_k"] == Predictor.from_path(bundle).predict(image)["top_k"]

    pyfunc = mlflow.pyfunc.load_model("models:/digits-test/1")
    assert pyfunc.predict([image])[0]["label"] == Predictor.from_path(bundle).predict(image)["label"]

    # `imgclf fetch`: the bundle's files directly in --out, as the serving image's `baked` target copies them
    from imgclf.cli import main

    assert main(["fetch", "2", "--out", str(tmp_path / "baked"), "--model-name", "digits-test"]) == 0
    assert sorted(p.name for p in (tmp_path / "baked").iterdir()) == sorted(p.name for p in bundle.iterdir())
    assert (
        Predictor.from_path(tmp_path / "baked").predict(image)["top_k"]
        == Predictor.from_path(bundle).predict(image)["top_k"]
    )
    with pytest.raises(SystemExit, match="is not empty"):
        main(["fetch", "2", "--out", str(tmp_path / "baked"), "--model-name", "digits-test"])


def test_bad_model_uri_is_a_clear_error(mlflow_uri):
    with pytest.raises(ValueError, match="not a models:/ URI"):
        resolve_version("runs:/abc/model")
    with pytest.raises(LookupError, match="no registered versions of model 'missing'"):
        resolve_version("models:/missing/latest")
