"""Test isolation: every run gets its own ZenML store, MLflow database, caches and BentoML home in a
temp folder, set before anything imports zenml or mlflow. Nothing touches the network."""

from __future__ import annotations

import os
import runpy
import socket
import sys
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SESSION_STATE = Path(tempfile.mkdtemp(prefix="imgclf-test-state-"))
# ZenML's MLflow tracker unsets MLFLOW_TRACKING_URI after a step, so tests that read the session's
# registry after a pipeline run pass this URI explicitly.
SESSION_MLFLOW_URI = f"sqlite:///{_SESSION_STATE / 'mlflow' / 'mlflow.db'}"
os.environ.update(
    IMGCLF_STATE=str(_SESSION_STATE),
    ZENML_CONFIG_PATH=str(_SESSION_STATE / "zenml"),
    MLFLOW_TRACKING_URI=SESSION_MLFLOW_URI,
    IMGCLF_CACHE_DIR=str(_SESSION_STATE / "cache"),
    BENTOML_HOME=str(_SESSION_STATE / "bentoml"),
    ZENML_ANALYTICS_OPT_IN="false",
    ZENML_ENABLE_RICH_TRACEBACK="false",
    AUTO_OPEN_DASHBOARD="false",
    BENTOML_DO_NOT_TRACK="True",
    MLFLOW_DISABLE_TELEMETRY="true",
    GX_ANALYTICS_ENABLED="false",
    DO_NOT_TRACK="true",
    HF_HUB_OFFLINE="1",  # tests never download weights
)
sys.path.insert(0, str(ROOT))
# ZenML writes the repository's active stack into .zen/config.yaml; the tests' own store has other
# stack ids, so without this a `make test` would leave the checkout's `make run` on a missing stack.
_REPO_ZEN_CONFIG = ROOT / ".zen" / "config.yaml"
_REPO_ZEN_CONFIG_TEXT = _REPO_ZEN_CONFIG.read_text() if _REPO_ZEN_CONFIG.is_file() else None


def pytest_sessionfinish(session, exitstatus) -> None:
    if _REPO_ZEN_CONFIG_TEXT is not None:
        _REPO_ZEN_CONFIG.write_text(_REPO_ZEN_CONFIG_TEXT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """The real digits data set, 30 images per class (300 PNGs)."""
    from imgclf.data.digits import write_digits

    out = tmp_path_factory.mktemp("digits")
    write_digits(out, limit_per_class=30)
    return out


@pytest.fixture(scope="session")
def full_digits_dir(tmp_path_factory) -> Path:
    from imgclf.data.digits import write_digits

    out = tmp_path_factory.mktemp("digits_full")
    write_digits(out)
    return out


@pytest.fixture()
def mlflow_uri(tmp_path, monkeypatch) -> str:
    """A private MLflow database for one test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    experiment = mlflow.MlflowClient().create_experiment("test", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment)
    yield uri
    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", ""))


@pytest.fixture(scope="session")
def small_model(full_digits_dir):
    """A small real model: resnet10t from scratch, 32 px, 3 epochs on the digits (about 0.97 accuracy).

    Returns (TrainedModel, split manifest)."""
    from imgclf.augment.policy import AugmentPolicy
    from imgclf.data.decoded import DecodedSplits
    from imgclf.data.ingest import ingest_folder
    from imgclf.data.split import SplitConfig, stratified_split
    from imgclf.preprocess import PreprocessSpec
    from imgclf.train.config import TrainConfig
    from imgclf.train.loop import fit

    manifest = stratified_split(ingest_folder(full_digits_dir), SplitConfig())
    config = TrainConfig(arch="resnet10t", pretrained=False, image_size=32, epochs=3, lr=3e-3)
    trained = fit(DecodedSplits(manifest, PreprocessSpec(image_size=32)), config, AugmentPolicy())
    return trained, manifest


@pytest.fixture(scope="session")
def servable_bundle(small_model, tmp_path_factory) -> Path:
    """`small_model` as a bundle the service can run: its weights and spec plus the fp32 ONNX file."""
    from imgclf.bundle import ONNX_FILE
    from imgclf.export.onnx import export_onnx

    trained, _ = small_model
    path = trained.save(tmp_path_factory.mktemp("servable") / "bundle")
    (path / ONNX_FILE).write_bytes(export_onnx(trained))
    return path


@contextmanager
def fast_pipeline_run(
    data_source: Path, config_dir: Path, edit: Callable[[dict], None] = lambda config: None, stop_service: bool = True
):
    """Run the training_pipeline with configs/training_fast.yaml on `data_source` (deploying on a free
    port), `edit` changing the config first; yield the run, then stop the service it started (unless
    `stop_service` is False: the caller stops it)."""
    import yaml
    from zenml.client import Client

    runpy.run_path(str(ROOT / "infra" / "local_stack.py"))["ensure_local_stack"]()
    config = yaml.safe_load((ROOT / "configs" / "training_fast.yaml").read_text())
    config["parameters"]["data_source"] = str(data_source)
    config["steps"]["deploy"]["parameters"]["config"]["port"] = free_port()
    edit(config)
    config_path = config_dir / "training.yaml"
    config_path.write_text(yaml.safe_dump(config))

    from pipelines import training_pipeline

    training_pipeline.with_options(config_path=str(config_path))()
    run = Client().get_pipeline("training_pipeline").last_run
    try:
        yield run
    finally:
        deployment = run.steps["deploy"].outputs["deployment"][0].load()
        if deployment.pid and stop_service:
            from imgclf.serving.deployment import stop

            stop(deployment.pid)


def load_infra_script(name: str):
    """A script of infra/ (not a package) as a module, e.g. load_infra_script("k8s_check")."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "infra" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
