"""MLflow model registry: register a model bundle, find versions, fetch one for serving.

The registered artifact is the bundle folder (safetensors + JSON spec + ONNX files) wrapped as a
models-from-code pyfunc, so the registry never holds a pickle.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

MODEL_CODE = Path(__file__).parent / "serving" / "mlflow_model.py"
BUNDLE_ARTIFACT = "bundle"


@dataclass(frozen=True)
class VersionInfo:
    """A registered version as the registry records it."""

    name: str
    version: str
    run_id: str  # the MLflow run that logged it (its artifacts: report, model card, ...)
    tags: dict[str, str]


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    model_uri: str  # models:/name/version
    source: str  # where MLflow stores the files


def register_bundle(bundle_dir: str | Path, name: str, tags: dict[str, str] | None = None) -> RegisteredVersion:
    """Log `bundle_dir` to the active MLflow run (one is started if none is) and register it under `name`."""
    import mlflow

    requirements = ["onnxruntime", "numpy", "pillow"]
    with _active_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            code_paths=[str(Path(__file__).parent)],
            artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
            pip_requirements=requirements,
            registered_model_name=name,
            tags=tags or {},
        )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, version, key, str(value))
    return RegisteredVersion(name=name, version=version, model_uri=f"models:/{name}/{version}", source=info.model_uri)


class _active_run:
    """Use the caller's active MLflow run (e.g. ZenML's tracker) or open a short one of our own."""

    def __enter__(self):
        import mlflow

        self._owned = mlflow.active_run() is None
        if self._owned:
            mlflow.start_run()
        return self

    def __exit__(self, *exc) -> None:
        import mlflow

        if self._owned:
            mlflow.end_run()


def latest_version(name: str, tracking_uri: str | None = None) -> str:
    import mlflow

    versions = mlflow.MlflowClient(tracking_uri=tracking_uri).search_model_versions(
        f"name='{name}'", order_by=["version_number DESC"], max_results=1
    )
    if not versions:
        where = tracking_uri or mlflow.get_tracking_uri()
        raise LookupError(f"no registered versions of model {name!r} in the MLflow registry at {where}")
    return str(versions[0].version)


def alias_version(name: str, alias: str, tracking_uri: str | None = None) -> str | None:
    """The version that `alias` (e.g. "production") points at, or None when the model or alias does not exist."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow.MlflowClient(tracking_uri=tracking_uri).get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def set_alias(name: str, version: str, alias: str, tracking_uri: str | None = None) -> str | None:
    """Point `alias` (e.g. "production") at `version`; returns the version it pointed at before, if any."""
    import mlflow

    previous = alias_version(name, alias, tracking_uri)
    mlflow.MlflowClient(tracking_uri=tracking_uri).set_registered_model_alias(name, alias, str(version))
    return previous


def describe_version(name: str, version: str, description: str, tracking_uri: str | None = None) -> None:
    """Set a registered version's description (shown on its page in the MLflow UI), e.g. its model card."""
    import mlflow

    mlflow.MlflowClient(tracking_uri=tracking_uri).update_model_version(name, version, description=description)


def resolve_version(model_uri: str, tracking_uri: str | None = None) -> tuple[str, str]:
    """models:/NAME/VERSION | models:/NAME/latest | models:/NAME@ALIAS -> (name, concrete version)."""
    import mlflow

    match = re.fullmatch(r"models:/([^/@]+)(?:/([^/]+)|@(.+))", model_uri)
    if not match:
        raise ValueError(f"not a models:/ URI: {model_uri!r} (expected models:/NAME/VERSION or models:/NAME@ALIAS)")
    name, version, alias = match.groups()
    if alias:
        return name, str(mlflow.MlflowClient(tracking_uri=tracking_uri).get_model_version_by_alias(name, alias).version)
    if version in (None, "latest"):
        return name, latest_version(name, tracking_uri)
    return name, version


def fetch_bundle(model_uri: str, dst: str | Path | None = None, tracking_uri: str | None = None) -> tuple[Path, str]:
    """Download a registered version's bundle folder. Returns (bundle_dir, version)."""
    import mlflow

    name, version = resolve_version(model_uri, tracking_uri)
    dst = Path(dst or tempfile.mkdtemp(prefix="imgclf-model-"))
    dst.mkdir(parents=True, exist_ok=True)
    previous = mlflow.get_tracking_uri()
    if tracking_uri:  # models:/ resolution inside MLflow reads the global URI
        mlflow.set_tracking_uri(tracking_uri)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dst)))
    finally:
        mlflow.set_tracking_uri(previous)
    bundle = local / "artifacts" / BUNDLE_ARTIFACT
    if not bundle.is_dir():
        raise FileNotFoundError(
            f"models:/{name}/{version} has no {BUNDLE_ARTIFACT} folder; was it registered by imgclf?"
        )
    return bundle, version


def version_info(name: str, version: str | None = None, tracking_uri: str | None = None) -> VersionInfo:
    """`version` of `name` (default: the latest) with its run and tags."""
    import mlflow

    version = version or latest_version(name, tracking_uri)
    found = mlflow.MlflowClient(tracking_uri=tracking_uri).get_model_version(name, version)
    return VersionInfo(name=name, version=str(version), run_id=found.run_id, tags=dict(found.tags))


def download_run_file(run_id: str, artifact_path: str, dst: str | Path, tracking_uri: str | None = None) -> Path | None:
    """A file the run logged, downloaded under `dst`; None when the run did not log it."""
    import mlflow

    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=str(dst), tracking_uri=tracking_uri
        )
    except mlflow.exceptions.MlflowException:
        return None
    return Path(local).resolve()


def tracking_uri() -> str:
    """Where MLflow tracks and registers (from MLFLOW_TRACKING_URI, as infra/env.sh sets it)."""
    import mlflow

    return mlflow.get_tracking_uri()
