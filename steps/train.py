import os
import shutil
from pathlib import Path
from typing import Annotated

import mlflow
from zenml import log_metadata, step

from imgclf.augment import AugmentPolicy
from imgclf.bundle import TrainedModel
from imgclf.data.manifest import DatasetManifest
from imgclf.train.config import TrainConfig
from imgclf.train.loop import fit_manifest


@step(experiment_tracker=True)
def train(
    manifest: DatasetManifest, policy: AugmentPolicy, config: TrainConfig = TrainConfig()
) -> Annotated[TrainedModel, "trained_model"]:
    """Fine-tune `config.arch` on the train split; keep the weights that score best on val.

    Checkpoints live under .state/checkpoints/<data>-<config>: a crashed or killed run started again
    with the same data and config continues from its last complete epoch. They are removed once the
    step succeeds, so a later run trains afresh."""
    state = Path(os.environ.get("IMGCLF_STATE", ".state"))
    run_key = f"{manifest.content_hash()[:12]}-{config.resume_key()}"
    mlflow.log_params({f"train.{k}": v for k, v in config.model_dump().items()})
    mlflow.log_params({f"augment.{k}": v for k, v in policy.model_dump().items()})
    checkpoints = state / "checkpoints" / run_key
    trained = fit_manifest(
        manifest,
        config,
        policy,
        on_epoch=lambda metrics, epoch: mlflow.log_metrics(metrics, step=epoch),
        checkpoint_dir=checkpoints,
        tensorboard_dir=state / "tensorboard" / run_key,
    )
    shutil.rmtree(checkpoints, ignore_errors=True)
    info = trained.info
    log_metadata(
        metadata={
            "best_val_score": info["best_val_score"],
            "best_epoch": info["best_epoch"],
            "epochs_run": len(trained.history),
            "stopped_early": info["stopped_early"],
            "resumed_after_epoch": info["resumed_after_epoch"],
            "train_images_per_s": info["steady_train_images_per_s"],
        }
    )
    return trained
