from typing import Annotated

import mlflow
from zenml import log_metadata, step

from imgclf.augment import AugmentPolicy
from imgclf.bundle import TrainedModel
from imgclf.data.cache import decoded_images
from imgclf.data.manifest import DatasetManifest
from imgclf.preprocess import PreprocessSpec
from imgclf.train.loop import TrainConfig, fit


@step(experiment_tracker=True)
def train(
    manifest: DatasetManifest, policy: AugmentPolicy, config: TrainConfig = TrainConfig()
) -> Annotated[TrainedModel, "trained_model"]:
    """Fine-tune `config.arch` on the train split; keep the weights that score best on val."""
    class_names = manifest.class_names
    resize = PreprocessSpec(image_size=config.image_size, resize_mode=config.resize_mode)
    train_set, val_set = manifest.subset("train"), manifest.subset("val")
    mlflow.log_params({f"train.{k}": v for k, v in config.model_dump().items()})
    mlflow.log_params({f"augment.{k}": v for k, v in policy.model_dump().items()})
    trained = fit(
        decoded_images(train_set, resize),
        train_set.label_indices(class_names),
        decoded_images(val_set, resize),
        val_set.label_indices(class_names),
        class_names,
        config,
        policy,
        on_epoch=lambda metrics, epoch: mlflow.log_metrics(metrics, step=epoch),
    )
    trained.info["data_hash"] = manifest.content_hash()
    log_metadata(metadata={"best_val_accuracy": trained.info["best_val_accuracy"], "epochs": len(trained.history)})
    return trained
