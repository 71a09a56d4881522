"""MLflow model registry: register a model bundle, find versions, fetch one for serving, and move the
`staging` and `production` stages.

The registered artifact is the bundle folder (safetensors + JSON spec + ONNX files) wrapped as a
models-from-code pyfunc, so the registry never holds a pickle.

Stages are MLflow aliases, and `move_stage` is the one way they move: compare-and-set under a lock,
every move recorded on the version as a JSON tag (the audit trail that `rollback_stage` reads back),
then mirrored to the stage mirrors installed as `imgclf.stage_mirrors` entry points (the ZenML model
stages, from `integrations/zenml_stages.py`), so `imgclf` itself never imports ZenML.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from imgclf import paths
from imgclf.stages import (
    MOVE_TAG,
    STAGES,
    StageConflict,
    StageMove,
    StageSyncError,
    check_move,
    check_stage_name,
    current_move,
    new_move,
)

MODEL_CODE = Path(__file__).parent / "serving" / "mlflow_model.py"
BUNDLE_ARTIFACT = "bundle"
# the run's test images (DatasetManifest.write): promotions score candidate and holder on them again
TEST_SPLIT_ARTIFACT = "evaluation/test_split"


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


def _name_filter(name: str) -> str:
    """The search filter `name = <name>`, quoted so that the name is the value and nothing else.

    MLflow's filter parser (mlflow.utils.search_utils, on sqlparse) has no escape sequence: a value is
    whatever lies between its single or double quotes. So the quote the name does not contain is
    used, and MLflow's own parser must read back exactly one `name` comparison with this value; a
    name it cannot express (both quote kinds, a backslash before the closing quote, ...) is a LookupError.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.utils.search_utils import SearchModelVersionUtils

    quote = "'" if "'" not in name else '"'
    text = f"name={quote}{name}{quote}"
    try:
        parsed = SearchModelVersionUtils.parse_search_filter(text)
    except MlflowException:
        parsed = None
    if parsed != [{"type": "attribute", "key": "name", "comparator": "=", "value": name}]:
        raise LookupError(f"model name {name!r} cannot be searched in the MLflow registry (quotes or escapes)")
    return text


def latest_version(name: str, tracking_uri: str | None = None) -> str:
    import mlflow

    versions = mlflow.MlflowClient(tracking_uri=tracking_uri).search_model_versions(
        _name_filter(name), order_by=["version_number DESC"], max_results=1
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


def describe_version(name: str, version: str, description: str, tracking_uri: str | None = None) -> None:
    """Set a registered version's description (shown on its page in the MLflow UI), e.g. its model card."""
    import mlflow

    mlflow.MlflowClient(tracking_uri=tracking_uri).update_model_version(name, version, description=description)


def set_version_tag(name: str, version: str, key: str, value: str, tracking_uri: str | None = None) -> None:
    import mlflow

    mlflow.MlflowClient(tracking_uri=tracking_uri).set_model_version_tag(name, str(version), key, value)


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


class StageMirror(Protocol):
    """Another view of the stages (ZenML's model stages), kept equal to the MLflow aliases."""

    def sync(self, name: str, holders: dict[str, VersionInfo | None], moves: list[StageMove]) -> None: ...

    def holders(self, name: str) -> dict[str, str | None]: ...


def stage_mirrors() -> list[StageMirror]:
    """The mirrors installed as `imgclf.stage_mirrors` entry points (pyproject.toml)."""
    from importlib.metadata import entry_points

    return [entry.load()() for entry in entry_points(group="imgclf.stage_mirrors")]


def stage_holders(name: str, tracking_uri: str | None = None) -> dict[str, str | None]:
    return {stage: alias_version(name, stage, tracking_uri) for stage in STAGES}


def stage_history(name: str, tracking_uri: str | None = None) -> list[StageMove]:
    """Every recorded move of `name`'s stages, oldest first."""
    import mlflow

    versions = mlflow.MlflowClient(tracking_uri=tracking_uri).search_model_versions(_name_filter(name))
    moves = [StageMove(**json.loads(v)) for mv in versions for k, v in mv.tags.items() if k.startswith(MOVE_TAG)]
    return sorted(moves, key=lambda move: move.seq)


def move_stage(
    name: str,
    stage: str,
    version: str,
    *,
    expect: str | None,
    reason: str,
    kind: str = "promote",
    tracking_uri: str | None = None,
    mirrors: list[StageMirror] | None = None,
) -> StageMove:
    """Point `stage` at `version` if the stage is still held by `expect` (None: by nobody), record the move
    on the version, and bring the mirrors along. A promotion to production takes only the staging holder,
    which leaves staging (a version holds one stage, as in ZenML). Refusals raise StageConflict."""
    import mlflow

    check_stage_name(stage)
    version = str(version)
    info = existing_version(name, version, tracking_uri)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    with _stage_lock(name, tracking_uri):
        holders = stage_holders(name, tracking_uri)
        check_move(stage, version, expect, holders, kind)
        history = stage_history(name, tracking_uri)
        seq = history[-1].seq + 1 if history else 1
        client.set_registered_model_alias(name, stage, version)
        if alias_version(name, stage, tracking_uri) != version:  # a writer that bypassed the lock (another host)
            raise StageConflict(f"{stage} of {name} was moved by another writer while version {version} was being set")
        moves = [new_move(seq, stage, kind, holders[stage], version, reason, info.tags)]
        if stage == "production" and alias_version(name, "staging", tracking_uri) == version:
            client.delete_registered_model_alias(name, "staging")
            why = f"version {version} went to production"
            moves.append(new_move(seq + 1, "staging", "vacate", version, None, why, info.tags))
        for move in moves:
            client.set_model_version_tag(name, version, move.tag, json.dumps(asdict(move)))
        sync_stage_mirrors(name, moves, tracking_uri, mirrors)
    return moves[0]


def rollback_stage(
    name: str, stage: str, reason: str = "", tracking_uri: str | None = None, mirrors: list[StageMirror] | None = None
) -> StageMove:
    """Give `stage` back to the holder before the current one, from the audit trail. Rollbacks undo moves
    one at a time: a second rollback goes one holder further back."""
    check_stage_name(stage)
    current = current_move(stage_history(name, tracking_uri), stage)
    if current is None:
        raise StageConflict(f"nothing to roll back: no version of {name} holds {stage} through a recorded move")
    if current.to_version is None:
        raise StageConflict(
            f"nothing to roll back: {stage} of {name} is empty since version {current.from_version} "
            "went on to production"
        )
    if current.from_version is None:
        raise StageConflict(
            f"version {current.to_version} was the first to hold {stage} of {name}: there is no earlier holder"
        )
    why = reason or f"rollback of move {current.seq} (version {current.from_version} -> {current.to_version})"
    return move_stage(
        name,
        stage,
        current.from_version,
        expect=current.to_version,
        reason=why,
        kind="rollback",
        tracking_uri=tracking_uri,
        mirrors=mirrors,
    )


def sync_stage_mirrors(
    name: str,
    moves: list[StageMove] | None = None,
    tracking_uri: str | None = None,
    mirrors: list[StageMirror] | None = None,
) -> None:
    """Make every mirror show MLflow's holders (idempotent); `moves` are recorded there too."""
    holders = {
        stage: version_info(name, v, tracking_uri) if v else None
        for stage, v in stage_holders(name, tracking_uri).items()
    }
    for mirror in stage_mirrors() if mirrors is None else mirrors:
        try:
            mirror.sync(name, holders, moves or [])
        except Exception as exc:
            raise StageSyncError(
                f"MLflow's stages of {name} moved, but {type(mirror).__name__} did not follow ({exc}); "
                "run `imgclf stages --sync` to repair it",
                moves,
            ) from exc


def stage_disagreements(
    name: str, tracking_uri: str | None = None, mirrors: list[StageMirror] | None = None
) -> list[str]:
    """Where a mirror shows other holders than MLflow's aliases ([] when they agree)."""
    truth = stage_holders(name, tracking_uri)
    problems = []
    for mirror in stage_mirrors() if mirrors is None else mirrors:
        seen = mirror.holders(name)
        problems += [
            f"{type(mirror).__name__}: {stage} is version {seen.get(stage)}, MLflow says {truth[stage]}"
            for stage in STAGES
            if seen.get(stage) != truth[stage]
        ]
    return problems


def existing_version(name: str, version: str, tracking_uri: str | None = None) -> VersionInfo:
    """`version_info`, with a LookupError that names the model and version when there is no such version."""
    from mlflow.exceptions import MlflowException

    try:
        return version_info(name, version, tracking_uri)
    except MlflowException as exc:
        raise LookupError(f"{name} has no version {version!r} in the MLflow registry") from exc


@contextlib.contextmanager
def _stage_lock(name: str, tracking_uri: str | None):
    """One stage move at a time per registry and model on this machine (flock: threads and processes)."""
    import mlflow

    key = hashlib.sha256(f"{tracking_uri or mlflow.get_tracking_uri()}\n{name}".encode()).hexdigest()[:16]
    path = paths.locks_dir() / f"stages-{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
