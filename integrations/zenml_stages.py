"""ZenML's model stages as a mirror of the MLflow aliases (`imgclf.registry.StageMirror`).

MLflow is the registry of record; this keeps the ZenML dashboard showing the same `staging` and
`production` holders, and records each move as metadata on the ZenML model version. A ZenML version is
found through the `zenml_model_version` tag the register step puts on the MLflow version; an MLflow
version registered outside a pipeline has none, and its stage then shows as empty in ZenML.
"""

from __future__ import annotations

from dataclasses import asdict

from zenml import log_metadata
from zenml.client import Client
from zenml.enums import ModelStages

from imgclf.registry import VersionInfo
from imgclf.stages import STAGES, ZENML_VERSION_TAG, StageMove

MLFLOW_VERSION_KEY = "mlflow_model_version"  # run metadata the register step logs on the ZenML version


class ZenMLStages:
    def sync(self, name: str, holders: dict[str, VersionInfo | None], moves: list[StageMove]) -> None:
        client = Client()
        if not _model_exists(client, name):
            return
        for stage in STAGES:
            wanted = holders[stage].tags.get(ZENML_VERSION_TAG) if holders[stage] else None
            current = _holder(client, name, stage)
            if wanted is None and current is not None:
                client.update_model_version(name, current.id, stage=ModelStages.ARCHIVED)
            elif wanted is not None and (current is None or current.name != wanted):
                client.update_model_version(name, wanted, stage=ModelStages(stage), force=True)
        for move in moves:  # on the version the move concerns: the one arriving, or the one leaving an emptied stage
            concerned = move.to_version or move.from_version
            target = next((h for h in holders.values() if h and h.version == concerned), None)
            zenml_version = target.tags.get(ZENML_VERSION_TAG) if target else None
            if zenml_version:
                log_metadata({f"stage_move_{move.seq:06d}": asdict(move)}, model_name=name, model_version=zenml_version)

    def holders(self, name: str) -> dict[str, str | None]:
        """The MLflow version each ZenML stage holder registered (None: the stage is empty in ZenML)."""
        client = Client()
        if not _model_exists(client, name):
            return dict.fromkeys(STAGES)
        found = {}
        for stage in STAGES:
            holder = _holder(client, name, stage)
            value = holder.run_metadata.get(MLFLOW_VERSION_KEY) if holder is not None else None
            found[stage] = str(value) if value is not None else None
        return found


def _model_exists(client: Client, name: str) -> bool:
    try:
        client.get_model(name)
    except KeyError:
        return False
    return True


def _holder(client: Client, name: str, stage: str):
    try:
        return client.get_model_version(name, ModelStages(stage))
    except KeyError:
        return None
