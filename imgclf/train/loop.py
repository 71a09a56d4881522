"""The training loop: transfer learning from the decoded cache, checkpointed every epoch, resumable,
early-stopped, optionally EMA'd, data-parallel under torchrun.

`fit` composes the parts: the batches (train.batches), the loss and score (train.objective), the
optimiser and schedule (train.optim), one epoch of training (train.epoch), the run's state with its
checkpoints (train.state) and the epoch hooks (train.hooks). Free of ZenML and MLflow: callers pass
`on_epoch` to log wherever they like. The `train` step and `imgclf train` both call `fit`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import shutil
import statistics
from pathlib import Path

import numpy as np
import torch
from torch import nn

from imgclf import paths
from imgclf.augment.policy import AugmentPolicy
from imgclf.data.decoded import DecodedSplit, DecodedSplits
from imgclf.data.manifest import DatasetManifest
from imgclf.inference import predict_logits, predict_logits_and_features
from imgclf.models.factory import create
from imgclf.models.projection import DEFAULT_DIM, fit_projection, sample_indices
from imgclf.models.thresholds import tune_thresholds
from imgclf.models.trained import TrainedModel
from imgclf.preprocess import PreprocessSpec
from imgclf.scores import sigmoid
from imgclf.train import budget as budgets
from imgclf.train import distributed
from imgclf.train.batches import TrainBatches
from imgclf.train.config import TrainConfig
from imgclf.train.distributed import Dist
from imgclf.train.epoch import EpochTrainer
from imgclf.train.hooks import Checkpointing, EarlyStopping, EpochHook, EpochMetrics, OnEpoch, TensorBoard
from imgclf.train.objective import LossFn, Objective
from imgclf.train.optim import build_optimizer, build_scheduler
from imgclf.train.state import TrainState

log = logging.getLogger(__name__)


def fit(
    data: DecodedSplits,
    config: TrainConfig,
    policy: AugmentPolicy = AugmentPolicy(),
    on_epoch: OnEpoch | None = None,
    checkpoint_dir: str | Path | None = None,
    tensorboard_dir: str | Path | None = None,
    initial: TrainedModel | None = None,
    loss_fn: LossFn | None = None,
) -> TrainedModel:
    """Train on `data.train` and return the weights of the epoch with the best score on `data.val`.

        Targets are class indices for single-label data or multi-hot rows for multi-label data (BCE loss,
        scored by mAP; the model then carries per-label thresholds tuned on `data.val`). The model carries
    the embedding projection fitted on `data.train` (`with_projection`). With
        `checkpoint_dir`, every epoch is checkpointed and a run started again with the same config
        continues from the last complete epoch.
        `initial`: start from this bundle's network and weights (e.g. a pruned one, whose structure the
        result keeps) instead of building `config.arch`. `loss_fn` replaces the training loss (validation
        keeps plain cross-entropy / BCE).
    """
    dist = distributed.setup()
    torch.set_num_threads(config.threads or _default_threads())
    _seed_everything(config.seed)
    budget = budgets.resolve(config, data.train.manifest)
    model, spec = _model(budget.config, data.class_names, initial, dist.device)
    if data.train.images.shape[1:3] != (spec.image_size, spec.image_size):
        raise ValueError(f"cached images are {data.train.images.shape[1:3]}, config asks for {spec.image_size}")
    budget = budgets.find_lr(budget, model, data.train, spec)
    config = budget.config
    if budget.reasons:
        log.info("training budget: %s", budget.describe())
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(distributed.teardown, dist)
        batches = TrainBatches.build(data.train, policy, spec, config, dist, len(data.class_names))
        cleanup.callback(batches.close)
        hooks = _hooks(config, on_epoch, checkpoint_dir, tensorboard_dir, dist)
        for hook in hooks:
            cleanup.callback(hook.close)
        state = _state(model, config, math.ceil(batches.batches_per_epoch() / config.accumulate_steps), hooks)
        if checkpoint_dir is not None:
            state.restore(checkpoint_dir)
        objective = Objective.build(batches.targets.ndim == 2, config.label_smoothing, loss_fn)
        trainer = EpochTrainer(state, batches, objective, config, dist)
        stopped_early = _run_epochs(trainer, data.val, hooks)
        weight_diff = distributed.max_weight_difference(model, dist)
    trained = _trained_model(
        state,
        config,
        data,
        spec,
        initial,
        multi_label=objective.multi_label,
        stopped_early=stopped_early,
        budget=budget.reasons,
        world_size=dist.world_size,
        rank_weights_max_abs_diff=weight_diff,
    )
    trained = with_label_thresholds(trained, data.val, dist.device)
    return with_projection(trained, data.train.images, dist.device)


def with_label_thresholds(trained: TrainedModel, val: DecodedSplit, device: torch.device | str = "cpu") -> TrainedModel:
    """`trained` with per-label thresholds tuned on `val` when the data is multi-label and has
    validation rows (else unchanged). Tuned once, on the weights that ship, and stored with them, so
    evaluation and the service decide with the same numbers instead of each tuning its own."""
    if np.ndim(val.targets) != 2 or not len(val):
        return trained
    logits = predict_logits(trained.build().to(device), val.images, trained.preprocess)
    return dataclasses.replace(trained, thresholds=tune_thresholds(val.targets, sigmoid(logits)).tolist())


def with_projection(
    trained: TrainedModel, images: np.ndarray, device: torch.device | str = "cpu", dim: int = DEFAULT_DIM
) -> TrainedModel:
    """`trained` with the embedding projection (PCA to `dim`) of its pooled features on `images`
    (training images; a seeded sample of at most `MAX_IMAGES`). Fitted once, on the weights that
    ship, so the exported embedding and the reference profile share one coordinate system. Fewer than
    two images: unchanged (the export then has logits only)."""
    if len(images) < 2:
        return trained
    sample = np.asarray(images[sample_indices(len(images))])
    _, pooled = predict_logits_and_features(trained.build().to(device), sample, trained.preprocess)
    return dataclasses.replace(trained, projection=fit_projection(pooled, dim))


def _default_threads() -> int:
    """The cores shared out among this machine's training processes (torchrun's LOCAL_WORLD_SIZE)."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _model(
    config: TrainConfig, class_names: list[str], initial: TrainedModel | None, device: torch.device
) -> tuple[nn.Module, PreprocessSpec]:
    """`config.arch` with a fresh head (or `initial`'s network and weights, which must fit the run),
    on `device` in the configured memory format; and the preprocessing its weights expect."""
    if initial is None:
        model, mean, std = create(
            config.arch,
            len(class_names),
            pretrained=config.pretrained,
            weights_file=config.weights_file,
            drop_rate=config.drop_rate,
            image_size=config.image_size,
        )
        spec = PreprocessSpec(image_size=config.image_size, resize_mode=config.resize_mode, mean=mean, std=std)
    else:
        spec = initial.preprocess
        fits = (initial.arch, list(initial.class_names), spec.image_size, spec.resize_mode)
        wanted = (config.arch, list(class_names), config.image_size, config.resize_mode)
        if fits != wanted:
            raise ValueError(
                f"the initial model (arch, classes, image size, resize mode) {fits} does not match "
                f"the training run's {wanted}"
            )
        model = initial.build(drop_rate=config.drop_rate)
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, spec


def _hooks(
    config: TrainConfig,
    on_epoch: OnEpoch | None,
    checkpoint_dir: str | Path | None,
    tensorboard_dir: str | Path | None,
    dist: Dist,
) -> list[EpochHook]:
    """Early stopping on every rank (they stop together); logging and checkpoints on the main one."""
    hooks: list[EpochHook] = [EarlyStopping(config.early_stopping_patience)]
    if dist.is_main:
        if on_epoch is not None:
            hooks.append(EpochMetrics(on_epoch))
        if tensorboard_dir is not None:
            hooks.append(TensorBoard(tensorboard_dir))
        if checkpoint_dir is not None:
            hooks.append(Checkpointing(checkpoint_dir))
    return hooks


def _state(model: nn.Module, config: TrainConfig, steps_per_epoch: int, hooks: list[EpochHook]) -> TrainState:
    optimizer = build_optimizer(model, config)
    ema = None
    if config.ema_decay:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=config.ema_decay)
    return TrainState(
        model,
        optimizer,
        build_scheduler(optimizer, config, steps_per_epoch),
        config.resume_key(),
        ema,
        hooks=[hook for hook in hooks if hook.key],
    )


def _run_epochs(trainer: EpochTrainer, val: DecodedSplit, hooks: list[EpochHook]) -> bool:
    """Train, validate and record epochs from where the state left off; whether a hook stopped early."""
    state, config = trainer.state, trainer.config
    for epoch in range(state.epoch + 1, config.epochs + 1):
        metrics = trainer.train(epoch)
        val_logits = predict_logits(
            state.eval_model, val.images, trainer.batches.spec, channels_last=config.channels_last
        )
        metrics.update(trainer.objective.val_metrics(val_logits, np.asarray(val.targets)))
        metrics["lr"] = state.optimizer.param_groups[0]["lr"]
        state.end_epoch(metrics)
        log.info("epoch %d/%d %s", epoch, config.epochs, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        for hook in hooks:
            hook.on_epoch_end(state, metrics)
        if any(hook.should_stop for hook in hooks):
            return True
    return False


def _trained_model(
    state: TrainState,
    config: TrainConfig,
    data: DecodedSplits,
    spec: PreprocessSpec,
    initial: TrainedModel | None,
    **run: float | bool | dict[str, str],
) -> TrainedModel:
    """The best weights with the run's history and info (`run`: what only the caller knows)."""
    if state.best_weights is None:
        raise RuntimeError("training ran no epoch: the checkpoint says it already finished all epochs")
    info = {
        "best_val_score": state.best_score,
        "best_epoch": state.best_epoch,
        "resumed_after_epoch": state.resumed_after_epoch,
        **run,
        "steady_train_images_per_s": _steady_speed(state),
        "train_config": config.model_dump(),
        "data_hash": data.data_hash,
    }
    return TrainedModel(
        arch=config.arch,
        class_names=list(data.class_names),
        preprocess=spec,
        state_dict=state.best_weights,
        structure=dict(initial.structure) if initial is not None else {},
        history=state.history,
        info=info,
    )


def _steady_speed(state: TrainState) -> float:
    """The median images/s of the epochs this call trained, the first left out when there are more."""
    speeds = [h["train_images_per_s"] for h in state.history[state.resumed_after_epoch :] if "train_images_per_s" in h]
    speeds = speeds or [0.0]
    return statistics.median(speeds[1:] or speeds)


def fit_manifest(
    manifest: DatasetManifest,
    config: TrainConfig,
    policy: AugmentPolicy = AugmentPolicy(),
    on_epoch: OnEpoch | None = None,
    checkpoint_dir: str | Path | None = None,
    tensorboard_dir: str | Path | None = None,
) -> TrainedModel:
    """Train on a split manifest's train rows, select on its val rows, through the decoded cache; the
    config's "auto" values are decided from those rows (`imgclf.train.budget`)."""
    image_size = budgets.resolve(config, manifest.subset("train")).config.image_size
    data = DecodedSplits(manifest, PreprocessSpec(image_size=image_size, resize_mode=config.resize_mode))
    return fit(data, config, policy, on_epoch, checkpoint_dir, tensorboard_dir)


def fit_resumable(
    manifest: DatasetManifest,
    config: TrainConfig,
    policy: AugmentPolicy = AugmentPolicy(),
    on_epoch: OnEpoch | None = None,
) -> TrainedModel:
    """`fit_manifest` with checkpoints and TensorBoard logs in the state directory, keyed by the data and
    the config: a crashed or killed run started again continues from its last complete epoch. The
    checkpoints are removed once training succeeds, so a later run trains afresh."""
    run_key = f"{manifest.content_hash()[:12]}-{config.resume_key()}"
    checkpoints = paths.checkpoints_dir(run_key)
    trained = fit_manifest(manifest, config, policy, on_epoch, checkpoints, paths.tensorboard_dir(run_key))
    shutil.rmtree(checkpoints, ignore_errors=True)
    return trained
