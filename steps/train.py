import os
import shutil
from pathlib import Path
from typing import Annotated

import mlflow
from zenml import log_metadata, step
from zenml.logger import get_logger

from imgclf.augment import AugmentPolicy
from imgclf.bundle import TrainedModel
from imgclf.data.manifest import DatasetManifest
from imgclf.export.distill import DistillConfig, distill
from imgclf.export.prune import PruneConfig, compression_metadata, prune_and_finetune
from imgclf.train.config import TrainConfig
from imgclf.train.loop import fit_manifest

logger = get_logger(__name__)


@step(experiment_tracker=True)
def train(
    manifest: DatasetManifest,
    policy: AugmentPolicy,
    config: TrainConfig = TrainConfig(),
    distill_into: DistillConfig | None = None,
    prune: PruneConfig | None = None,
) -> Annotated[TrainedModel, "trained_model"]:
    """Fine-tune `config.arch` on the train split; keep the weights that score best on val. Optionally
    distil it into a smaller student and/or prune channels (in that order); the smaller model is then
    the one the pipeline evaluates, exports and ships, so the gate judges the compressed network.

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
    if distill_into is not None:
        trained, _alone, report = distill(trained, manifest, distill_into, policy)
        logger.info("distilled %s into %s; the pipeline goes on with the student:\n%s", config.arch, distill_into.student, report.table())
        mlflow.log_dict(report.to_dict(), "distill_report.json")
    if prune is not None:
        trained, report = prune_and_finetune(trained, manifest, prune, policy)
        logger.info("pruned %.0f%% of the channels; the pipeline goes on with the pruned model:\n%s", 100 * prune.amount, report.table())
        mlflow.log_dict(report.to_dict(), "prune_report.json")
    info = trained.info  # of the model that ships (the student / the pruned fine-tune when enabled)
    log_metadata(
        metadata={
            "best_val_score": info["best_val_score"],
            "best_epoch": info["best_epoch"],
            "epochs_run": len(trained.history),
            "stopped_early": info["stopped_early"],
            "resumed_after_epoch": info["resumed_after_epoch"],
            "train_images_per_s": info["steady_train_images_per_s"],
            "shipped_arch": trained.arch,
            **compression_metadata(info),
        }
    )
    return trained

