"""The training loop: transfer learning from the decoded cache, checkpointed every epoch, resumable,
early-stopped, optionally EMA'd, data-parallel under torchrun.

Free of ZenML and MLflow: callers pass `on_epoch` to log wherever they like. The `train` step and
`imgclf train` both call `fit`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from imgclf import paths
from imgclf.augment.batched import BatchAugment
from imgclf.augment.policy import AugmentPolicy
from imgclf.data.decoded import DecodedSplits
from imgclf.data.loader import CacheLoader
from imgclf.data.manifest import DatasetManifest
from imgclf.inference import predict_logits
from imgclf.models.factory import backbone_parameters, create, head_parameters, set_backbone_trainable
from imgclf.models.trained import TrainedModel
from imgclf.preprocess import PreprocessSpec
from imgclf.train import checkpoint, distributed
from imgclf.train.config import TrainConfig

log = logging.getLogger(__name__)

OnEpoch = Callable[[dict[str, float], int], None]
# (logits, targets, model input) -> loss: the training loss with the batch the model saw (augmented,
# mixed, normalised), e.g. knowledge distillation, where the teacher must see that same batch
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _param_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """Head at `lr`, backbone at `lr * backbone_lr_scale`; no weight decay on norms and biases."""
    groups = []
    for params, scale in ((head_parameters(model), 1.0), (backbone_parameters(model), config.backbone_lr_scale)):
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        for subset, wd in ((decay, config.weight_decay), (no_decay, 0.0)):
            if subset:
                groups.append({"params": subset, "weight_decay": wd, "lr": config.lr * scale, "base_lr": config.lr * scale})
    return groups


def _optimizer(groups: list[dict], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


def _lr_lambda(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = steps_per_epoch * config.epochs
    warmup = int(config.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "step":
            return config.step_gamma ** (step // (config.step_epochs * steps_per_epoch))
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _autocast(config: TrainConfig, device: torch.device):
    use_bf16 = config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()


def _val_metrics(logits: np.ndarray, targets: np.ndarray, criterion: nn.Module, multi_label: bool) -> dict[str, float]:
    if not len(targets):
        return {"val_loss": float("nan"), "val_score": 0.0}
    t = torch.from_numpy(targets)
    loss = float(criterion(torch.from_numpy(logits), t.float() if multi_label else t))
    if multi_label:
        from sklearn.metrics import average_precision_score

        present = targets.sum(0) > 0
        score = float(average_precision_score(targets[:, present], logits[:, present], average="macro")) if present.any() else 0.0
        return {"val_loss": loss, "val_map": score, "val_score": score}
    accuracy = float((logits.argmax(1) == targets).mean())
    return {"val_loss": loss, "val_accuracy": accuracy, "val_score": accuracy}


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

    Targets are class indices for single-label data or multi-hot rows for multi-label data (BCE
    loss, scored by mAP). With `checkpoint_dir`, every epoch is checkpointed and a run started again
    with the same config continues from the last complete epoch.
    `initial`: start from this bundle's network and weights (e.g. a pruned one, whose structure the
    result keeps) instead of building `config.arch`. `loss_fn` replaces the training loss (validation
    keeps plain cross-entropy / BCE).
    """
    train_images, train_targets = data.train.images, data.train.targets
    val_images, val_targets = data.val.images, data.val.targets
    class_names = data.class_names
    dist_info = distributed.setup()
    device = dist_info.device
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    _seed_everything(config.seed)
    train_targets, val_targets = np.asarray(train_targets), np.asarray(val_targets)
    multi_label = train_targets.ndim == 2

    if initial is None:
        model, mean, std = create(
            config.arch, len(class_names), pretrained=config.pretrained, weights_file=config.weights_file,
            drop_rate=config.drop_rate, image_size=config.image_size,
        )
        spec = PreprocessSpec(image_size=config.image_size, resize_mode=config.resize_mode, mean=mean, std=std)
    else:
        spec = initial.preprocess
        fits = (initial.arch, list(initial.class_names), spec.image_size, spec.resize_mode)
        wanted = (config.arch, list(class_names), config.image_size, config.resize_mode)
        if fits != wanted:
            raise ValueError(f"the initial model (arch, classes, image size, resize mode) {fits} does not match the training run's {wanted}")
        model = initial.build(drop_rate=config.drop_rate)
    if train_images.shape[1:3] != (spec.image_size, spec.image_size):
        raise ValueError(f"cached images are {train_images.shape[1:3]}, config asks for {spec.image_size}")
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)

    accumulate = config.accumulate_steps
    per_rank_batch = max(1, config.batch_size // dist_info.world_size)
    labels_for_balance = train_targets if not multi_label else train_targets.argmax(1)

    def epoch_indices(epoch: int, rng: np.random.Generator) -> np.ndarray:
        order = policy.epoch_indices(labels_for_balance, rng)
        order = order[: len(order) - len(order) % dist_info.world_size]  # equal shares: DDP ranks step together
        return order[dist_info.rank :: dist_info.world_size]  # each rank a disjoint share of the epoch

    loader = CacheLoader(
        train_images, np.arange(len(train_targets)), per_rank_batch,
        augment=BatchAugment.from_policy(policy, spec.image_size), seed=config.seed,
        indices_for_epoch=epoch_indices, num_workers=config.num_workers,
        drop_last=len(train_targets) // dist_info.world_size > per_rank_batch,  # a batch of 1 breaks BatchNorm
    )
    steps_per_epoch = math.ceil(loader.batches_per_epoch(1) / accumulate)
    optimizer = _optimizer(_param_groups(model, config), config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, steps_per_epoch))
    ema = None
    if config.ema_decay:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=config.ema_decay)
    if multi_label:
        criterion: nn.Module = nn.BCEWithLogitsLoss()
        val_criterion: nn.Module = nn.BCEWithLogitsLoss()
    else:
        criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        val_criterion = nn.CrossEntropyLoss()
    train_loss: LossFn = loss_fn or (lambda logits, target, x: criterion(logits, target))
    mix = policy.build_mix(len(class_names))
    targets_t = torch.from_numpy(train_targets.astype(np.float32) if multi_label else train_targets.astype(np.int64))

    start_epoch, best_score, best_epoch, bad_epochs, history, best_state = 1, -math.inf, 0, 0, [], None
    resumed_from = 0
    if checkpoint_dir is not None:
        restored = checkpoint.load(checkpoint_dir)
        if restored is not None:
            state, best_state = restored
            if state["resume_key"] != config.resume_key():
                raise ValueError(
                    f"checkpoint in {checkpoint_dir} was written with a different training config; "
                    "use another checkpoint folder or delete it to start afresh"
                )
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if ema is not None and state.get("ema") is not None:
                ema.module.load_state_dict(state["ema"])
            torch.set_rng_state(state["torch_rng"])
            start_epoch, best_score, best_epoch = state["epoch"] + 1, state["best_score"], state["best_epoch"]
            bad_epochs, history, resumed_from = state["bad_epochs"], list(state["history"]), state["epoch"]
            log.info("resuming from %s after epoch %d", checkpoint_dir, state["epoch"])

    writer = None
    if tensorboard_dir is not None and dist_info.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(tensorboard_dir))

    frozen = None
    train_model: nn.Module = model
    stopped_early = False
    try:
        for epoch in range(start_epoch, config.epochs + 1):
            want_frozen = config.transfer == "linear_probe" or (config.transfer == "freeze_then_unfreeze" and epoch <= config.freeze_epochs)
            if want_frozen != frozen:
                set_backbone_trainable(model, not want_frozen)
                frozen = want_frozen
                if dist_info.enabled:  # DDP must be rebuilt when the set of trained parameters changes
                    train_model = torch.nn.parallel.DistributedDataParallel(model)
                elif config.compile:
                    train_model = torch.compile(model)
            model.train()  # a frozen backbone's norm layers stay in eval mode (set_backbone_trainable's hook)
            metrics = _train_one_epoch(
                train_model, model, loader, epoch, spec, config, optimizer, scheduler, train_loss, mix, targets_t,
                ema, multi_label, device, dist_info,
            )
            eval_model = ema.module if ema is not None else model
            val_logits = predict_logits(eval_model, val_images, spec, channels_last=config.channels_last)
            metrics.update(_val_metrics(val_logits, val_targets, val_criterion, multi_label))
            metrics["lr"] = optimizer.param_groups[0]["lr"]
            history.append({"epoch": epoch, **metrics})
            improved = metrics["val_score"] > best_score
            if improved:
                best_score, best_epoch, bad_epochs = metrics["val_score"], epoch, 0
                best_state = {k: v.detach().cpu().clone().contiguous() for k, v in eval_model.state_dict().items()}
            else:
                bad_epochs += 1
            log.info("epoch %d/%d %s", epoch, config.epochs, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
            if dist_info.is_main:
                if on_epoch:
                    on_epoch(metrics, epoch)
                if writer is not None:
                    for key, value in metrics.items():
                        writer.add_scalar(key, value, epoch)
                if checkpoint_dir is not None:
                    checkpoint.save(
                        checkpoint_dir,
                        {
                            "epoch": epoch, "resume_key": config.resume_key(), "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                            "ema": ema.module.state_dict() if ema is not None else None,
                            "torch_rng": torch.get_rng_state(), "best_score": best_score, "best_epoch": best_epoch,
                            "bad_epochs": bad_epochs, "history": history,
                        },
                        best_state if improved else None,
                    )
            if config.early_stopping_patience and bad_epochs >= config.early_stopping_patience:
                log.info("early stop after epoch %d: no val improvement for %d epochs", epoch, bad_epochs)
                stopped_early = True
                break
        weight_diff = distributed.max_weight_difference(model, dist_info)
    finally:
        loader.close()
        if writer is not None:
            writer.close()
        distributed.teardown(dist_info)

    if best_state is None:
        raise RuntimeError("training ran no epoch: the checkpoint says it already finished all epochs")
    speeds = [h["train_images_per_s"] for h in history[resumed_from:] if "train_images_per_s" in h] or [0.0]
    return TrainedModel(
        arch=config.arch,
        class_names=list(class_names),
        preprocess=spec,
        state_dict=best_state,
        structure=dict(initial.structure) if initial is not None else {},
        history=history,
        info={
            "best_val_score": best_score,
            "best_epoch": best_epoch,
            "multi_label": multi_label,
            "stopped_early": stopped_early,
            "resumed_after_epoch": resumed_from,
            "world_size": dist_info.world_size,
            "rank_weights_max_abs_diff": weight_diff,
            "steady_train_images_per_s": statistics.median(speeds[1:] or speeds),
            "train_config": config.model_dump(),
            "data_hash": data.data_hash,
        },
    )


def _train_one_epoch(
    train_model, model, loader, epoch, spec, config, optimizer, scheduler, train_loss, mix, targets_t, ema,
    multi_label, device, dist_info,
) -> dict[str, float]:
    started, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
    batches = loader.epoch(epoch)
    progress = None
    if dist_info.is_main and sys.stderr.isatty():
        from tqdm import tqdm

        progress = tqdm(batches, total=loader.batches_per_epoch(epoch), desc=f"epoch {epoch}", unit="batch", leave=False)
        batches = progress
    def apply_update() -> None:
        """One optimiser step from the accumulated gradients (clipped), then schedule and EMA."""
        if config.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        if ema is not None:
            ema.update(model)

    optimizer.zero_grad(set_to_none=True)
    for number, (images, rows) in enumerate(batches, start=1):
        x = spec.normalize(images.to(device, non_blocking=True))
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = targets_t[rows].to(device)
        target = y
        if mix is not None:
            x, target = mix(x, y)
        with _autocast(config, device):
            logits = train_model(x)
            loss = train_loss(logits.float(), target, x)
        (loss / config.accumulate_steps).backward()
        if number % config.accumulate_steps == 0:
            apply_update()
        seen += len(rows)
        loss_sum += float(loss.detach()) * len(rows)
        if not multi_label:
            correct += int((logits.argmax(1) == y).sum())
        if progress is not None:
            progress.set_postfix(loss=f"{loss_sum / seen:.3f}", img_s=f"{seen / (time.perf_counter() - started):.0f}")
    if seen and number % config.accumulate_steps:  # a partial accumulation at the end of the epoch
        apply_update()
    elapsed = time.perf_counter() - started
    metrics = {
        "train_loss": distributed.all_ranks_mean(loss_sum / max(seen, 1), dist_info),
        "train_images_per_s": seen * dist_info.world_size / elapsed,
    }
    if not multi_label:
        metrics["train_accuracy"] = distributed.all_ranks_mean(correct / max(seen, 1), dist_info)
    return metrics


def fit_manifest(
    manifest: DatasetManifest,
    config: TrainConfig,
    policy: AugmentPolicy = AugmentPolicy(),
    on_epoch: OnEpoch | None = None,
    checkpoint_dir: str | Path | None = None,
    tensorboard_dir: str | Path | None = None,
) -> TrainedModel:
    """Train on a split manifest's train rows, select on its val rows, through the decoded cache."""
    data = DecodedSplits(manifest, PreprocessSpec(image_size=config.image_size, resize_mode=config.resize_mode))
    data.require("train")
    return fit(data, config, policy, on_epoch, checkpoint_dir, tensorboard_dir)


def fit_resumable(
    manifest: DatasetManifest, config: TrainConfig, policy: AugmentPolicy = AugmentPolicy(), on_epoch: OnEpoch | None = None
) -> TrainedModel:
    """`fit_manifest` with checkpoints and TensorBoard logs in the state directory, keyed by the data and
    the config: a crashed or killed run started again continues from its last complete epoch. The
    checkpoints are removed once training succeeds, so a later run trains afresh."""
    run_key = f"{manifest.content_hash()[:12]}-{config.resume_key()}"
    checkpoints = paths.checkpoints_dir(run_key)
    trained = fit_manifest(manifest, config, policy, on_epoch, checkpoints, paths.tensorboard_dir(run_key))
    shutil.rmtree(checkpoints, ignore_errors=True)
    return trained
