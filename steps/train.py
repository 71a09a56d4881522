from typing import Annotated

import mlflow
from zenml import log_metadata, step
from zenml.logger import get_logger

from imgclf.augment.policy import AugmentPolicy
from imgclf.compress.distill import DistillConfig
from imgclf.compress.figures import compression_metadata
from imgclf.compress.plan import compress
from imgclf.compress.prune import PruneConfig
from imgclf.data.manifest import DatasetManifest
from imgclf.models.trained import TrainedModel
from imgclf.train.config import DistributedConfig, TrainConfig
from imgclf.train.launch import fit_processes

logger = get_logger(__name__)


@step(experiment_tracker=True)
def train(
    manifest: DatasetManifest,
    policy: AugmentPolicy,
    config: TrainConfig = TrainConfig(),
    distill_into: DistillConfig | None = None,
    prune: PruneConfig | None = None,
    distributed: DistributedConfig = DistributedConfig(),
) -> Annotated[TrainedModel, "trained_model"]:
    """Fine-tune `config.arch` on the train split; keep the weights that score best on val (a killed run
    started again continues from its last epoch). Optionally distil it into a smaller student and/or
    prune channels; the smaller model is then the one the pipeline evaluates, exports and ships.
    `distributed` asks for N data-parallel processes (torchrun from inside the step; metrics from rank 0)."""
    mlflow.log_params({f"train.{k}": v for k, v in config.model_dump().items()})
    mlflow.log_params({f"augment.{k}": v for k, v in policy.model_dump().items()})
    nproc = distributed.processes()
    mlflow.log_param("train.nproc_per_node", nproc)
    trained = fit_processes(
        manifest, config, policy, nproc, on_epoch=lambda metrics, epoch: mlflow.log_metrics(metrics, step=epoch)
    )
    decided = {name: trained.info["train_config"][name] for name in trained.info["budget"]}
    mlflow.log_params({f"budget.{name}": value for name, value in decided.items()})  # what each "auto" became
    result = compress(trained, manifest, policy, distill_into, prune)
    for name, report in (("distill", result.distill_report), ("prune", result.prune_report)):
        if report is not None:
            logger.info("%s: the pipeline goes on with the smaller model\n%s", name, report.table())
            mlflow.log_dict(report.to_dict(), f"{name}_report.json")
    shipped = result.model
    info = shipped.info
    log_metadata(
        metadata={
            "best_val_score": info["best_val_score"],
            "best_epoch": info["best_epoch"],
            "epochs_run": len(shipped.history),
            "stopped_early": info["stopped_early"],
            "resumed_after_epoch": info["resumed_after_epoch"],
            "train_images_per_s": info["steady_train_images_per_s"],
            "world_size": trained.info["world_size"],
            "shipped_arch": shipped.arch,
            "image_size": trained.preprocess.image_size,
            "epochs_planned": trained.info["train_config"]["epochs"],
            "budget": trained.info["budget"],
            **compression_metadata(info),
        }
    )
    return shipped
