"""What the commands read: a config from YAML and flags, and a model's data (its own split)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from imgclf.augment.policy import AugmentPolicy
from imgclf.data.ingest import DataSourceError
from imgclf.data.manifest import DatasetManifest
from imgclf.data.prepare import PreparedData, prepare_data
from imgclf.data.split import SplitConfig

if TYPE_CHECKING:  # the commands load torch only when they run
    from imgclf.models.trained import TrainedModel


def prepare(data: str, split: SplitConfig, report: bool = True) -> PreparedData:
    """Ingest -> per-file checks -> split: the data every command outside ZenML works on."""
    prepared = prepare_data(data, split)
    if report and prepared.describe_skipped():
        print(prepared.describe_skipped())
    return prepared


def model_split(
    trained: TrainedModel, data: str | None, split_seed: int | None, command: str, need: str
) -> DatasetManifest:
    """The split `trained` was trained on: `data`, else the source its bundle records, split by the
    recorded split config (else by its training seed, as `imgclf train` splits); `split_seed` overrides
    the seed. Without a source, the error says what the command needs the images for."""
    source = data or trained.info.get("data_source")
    if not source:
        raise SystemExit(
            f"imgclf {command}: {need}: pass --data with the images the model was trained on "
            "(the bundle records no data source; `imgclf train` records one)"
        )
    recorded = trained.info.get("split_config")
    train_seed = trained.info.get("train_config", {}).get("seed", SplitConfig().seed)
    split = SplitConfig(**recorded) if recorded else SplitConfig(seed=train_seed)
    if split_seed is not None:
        split = split.model_copy(update={"seed": split_seed})
    try:
        return prepare(source, split).manifest
    except DataSourceError as exc:
        if data:
            raise
        raise SystemExit(
            f"imgclf {command}: {exc} (the source the bundle records); pass --data with its new place"
        ) from None


def settings(config_file: str | None, flags: dict) -> dict:
    """A config's fields: the YAML file's (if any), overridden by the flags that were given."""
    import yaml

    values = yaml.safe_load(Path(config_file).read_text()) if config_file else {}
    values.update({k: v for k, v in flags.items() if v is not None})
    return values


def policy(augment_file: str | None) -> AugmentPolicy:
    return AugmentPolicy(**settings(augment_file, {}))
