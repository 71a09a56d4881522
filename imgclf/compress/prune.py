"""Structured pruning: remove whole channels (not masks), so the network really gets smaller and
faster, then fine-tune it briefly with the training loop.

Each channel is scored by the L1 norm of its weights in every layer that shares it (conv filters,
norm scales; averaged), and the lowest-scoring `amount` of each group is removed. Which layers
share a channel (a residual add ties a whole ResNet stage together, a depthwise conv ties its input
to its output, squeeze-excite ties its two convs to the block) is found by tracing the network with
torch-pruning's dependency graph (DepGraph), so timm/torchvision CNNs need no per-architecture code.
Tested on ResNet, EfficientNet-Lite and MobileNetV3 (timm and torchvision). BatchNorm statistics are
then re-estimated on train images, so the pruned network is usable even before fine-tuning.

A pruned bundle is still safetensors + JSON: `TrainedModel.structure` records the attributes that
changed (see `imgclf.models.structure`); `prune_model` checks that the rebuilt network reproduces the
pruned one's logits. The before/after figures are `imgclf.compress.figures`, shared with distillation.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from imgclf.augment.policy import AugmentPolicy
from imgclf.compress.figures import (
    ModelFigures,
    accuracy,
    compression_data,
    count_params,
    figures_table,
    measure_models,
)
from imgclf.data.manifest import DatasetManifest
from imgclf.inference import model_input
from imgclf.models.factory import create, head_parameters
from imgclf.models.structure import structure_of
from imgclf.models.trained import TrainedModel
from imgclf.preprocess import PreprocessSpec
from imgclf.train.config import TrainConfig
from imgclf.train.loop import fit, with_projection


class PruneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: float = Field(0.3, gt=0, lt=1, description="fraction of the channels of each prunable layer group removed")
    ignore: list[str] = Field(
        default_factory=list,
        description="module-name patterns (fnmatch, e.g. 'layer4.*') whose output channels are kept; "
        "the classifier head always is",
    )
    round_to: int | None = Field(
        None, ge=2, description="keep channel counts multiples of this (e.g. 8 for SIMD-friendly widths)"
    )
    recalibration_images: int = Field(
        1024,
        ge=0,
        description="train images (un-augmented) on which BatchNorm statistics are re-estimated after pruning; 0 = off",
    )
    epochs: int = Field(2, ge=0, description="fine-tune epochs after pruning; 0 = none")
    lr: float = Field(1e-3, gt=0, description="fine-tune learning rate")
    batch_size: int | None = Field(None, ge=1, description="default: the bundle's training batch size")
    seed: int | None = Field(None, description="default: the bundle's training seed")
    num_workers: int | None = Field(None, ge=0)
    latency_repeats: int = Field(
        50, ge=1, description="batch-1 timed calls per model and round (batch-32: a fifth of that, at least 3)"
    )
    latency_rounds: int = Field(3, ge=1, description="alternating timing rounds; the report keeps the medians")


# -- pruning ----------------------------------------------------------------------------------------


def _ignored_modules(model: nn.Module, patterns: list[str], arch: str) -> list[nn.Module]:
    """The head's modules plus every module matching a pattern; a pattern matching nothing is an error."""
    head = {id(p) for p in head_parameters(model)}
    ignored = [m for m in model.modules() if any(id(p) in head for p in m.parameters(recurse=False))]
    names = [name for name, _ in model.named_modules() if name]
    for pattern in patterns:
        matched = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            raise ValueError(
                f"ignore pattern {pattern!r} matches no module of {arch} "
                f"(module names look like {names[0]!r}, {names[-1]!r})"
            )
        ignored.extend(model.get_submodule(name) for name in matched)
    return ignored


def recalibrate_batchnorm(
    model: nn.Module, images: np.ndarray, spec: PreprocessSpec, count: int, batch_size: int = 64, seed: int = 0
) -> None:
    """Re-estimate every BatchNorm's running statistics on `count` random images, weights untouched.

    Removing channels shifts the inputs of every later layer, so the stored statistics no longer fit
    and a pruned network can fall to chance before any fine-tuning; re-estimated, it keeps most of its
    accuracy. Random images, because batches of one class would understate the variance. A fine-tune
    does not need it (training normalises with each batch's own statistics); pruning without one
    (epochs 0) does."""
    import torch
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or not count:
        return
    chosen = np.random.default_rng(seed).permutation(len(images))[:count]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over all batches
    model.train()
    try:
        with torch.no_grad():
            for start in range(0, len(chosen), batch_size):
                rows = chosen[start : start + batch_size]
                if len(rows) > 1:  # a batch of 1 has no variance
                    model(model_input(images[rows], spec))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()


def prune_model(
    trained: TrainedModel, config: PruneConfig, calibration_images: np.ndarray | None = None
) -> TrainedModel:
    """The bundle with the lowest-L1 `amount` of channels removed (no fine-tuning), its BatchNorm
    statistics re-estimated on `calibration_images` (uint8, N x H x W x 3) when given.

    Works on an already pruned bundle too (pruning again removes `amount` of what is left)."""
    import torch_pruning as tp

    model = trained.build()
    size = trained.preprocess.image_size
    ignored = _ignored_modules(model, config.ignore, trained.arch)
    params_before = count_params(model)
    try:
        pruner = tp.pruner.BasePruner(
            model,
            torch.zeros(1, 3, size, size),
            importance=tp.importance.GroupMagnitudeImportance(p=1),
            pruning_ratio=config.amount,
            ignored_layers=ignored,
            round_to=config.round_to,
        )
        pruner.step()
    except Exception as exc:  # tracing or pruning failed inside torch-pruning
        raise RuntimeError(f"cannot prune {trained.arch}: torch-pruning failed ({type(exc).__name__}: {exc})") from exc
    model.eval()
    if calibration_images is not None:
        recalibrate_batchnorm(model, calibration_images, trained.preprocess, config.recalibration_images)
    reference, _, _ = create(trained.arch, len(trained.class_names), pretrained=False, image_size=size)
    pruned = TrainedModel(
        arch=trained.arch,
        class_names=list(trained.class_names),
        preprocess=trained.preprocess,
        state_dict={k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()},
        history=[],
        info={
            **trained.info,
            "pruned": [
                *trained.info.get("pruned", []),
                {
                    "amount": config.amount,
                    "ignore": config.ignore,
                    "round_to": config.round_to,
                    "params_before": params_before,
                    "params_after": count_params(model),
                },
            ],
        },
        structure=structure_of(model, reference),
    )
    _check_rebuild(model, pruned)
    return pruned


def _check_rebuild(model: nn.Module, pruned: TrainedModel) -> None:
    """The bundle must rebuild the very network that was pruned: same logits on random input."""
    import torch

    size = pruned.preprocess.image_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        diff = float((model(x) - pruned.build()(x)).abs().max())
    if not diff <= 1e-4:
        raise RuntimeError(
            f"the pruned {pruned.arch} cannot be rebuilt from its bundle (largest logit difference {diff:.3g}): "
            "the architecture keeps a channel count where the structure record does not see it"
        )


@dataclass
class PruneReport:
    arch: str
    amount: float
    finetune_epochs: int
    before: ModelFigures
    after: ModelFigures  # after fine-tuning
    accuracy_pruned_not_finetuned: float
    batchnorm_recalibrated: bool  # before that accuracy was measured
    data_matches_training: bool | None  # the data's hash equals the bundle's (None: the bundle has none)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        after = f"pruned {self.amount:.0%}" + (
            f", fine-tuned {self.finetune_epochs} ep" if self.finetune_epochs else ""
        )
        text = figures_table([(f"{self.arch} (before)", self.before), (after, self.after)])
        how = " (BatchNorm statistics re-estimated)" if self.batchnorm_recalibrated else ""
        return (
            text
            + f"\ntest accuracy right after pruning{how}, before fine-tuning: {self.accuracy_pruned_not_finetuned:.4f}"
        )


def _finetune_config(trained: TrainedModel, config: PruneConfig) -> TrainConfig:
    """The bundle's own training settings, but full training from its weights for `config.epochs` at
    `config.lr`, without early stopping or EMA (over a short fine-tune an EMA lags behind)."""
    base = {k: v for k, v in trained.info.get("train_config", {}).items() if k in TrainConfig.model_fields}
    base.update(
        arch=trained.arch,
        pretrained=False,
        weights_file=None,
        transfer="full",
        image_size=trained.preprocess.image_size,
        resize_mode=trained.preprocess.resize_mode,
        epochs=config.epochs,
        lr=config.lr,
        early_stopping_patience=None,
        ema_decay=None,
    )
    base.update(
        {
            k: v
            for k, v in {
                "batch_size": config.batch_size,
                "seed": config.seed,
                "num_workers": config.num_workers,
            }.items()
            if v is not None
        }
    )
    return TrainConfig(**base)


def prune_and_finetune(
    trained: TrainedModel, split: DatasetManifest, config: PruneConfig, policy: AugmentPolicy = AugmentPolicy()
) -> tuple[TrainedModel, PruneReport]:
    """Prune, fine-tune on the split's train rows (selecting on val), and measure both networks on
    its test rows. Give the split the model was trained with, or test images may have been seen."""
    data = compression_data(split, trained)
    spec = trained.preprocess
    pruned = prune_model(trained, config, calibration_images=data.train.images)
    accuracy_pruned = accuracy(pruned.build(), data.test.images, data.test.targets, spec)
    if config.epochs:
        result = fit(data, _finetune_config(trained, config), policy, initial=pruned)
        # keep what earlier compressions (a distillation) reported: the shipped model's history
        result.info.update({k: v for k, v in trained.info.items() if k.endswith("_report")})
        result.info["pruned"] = pruned.info["pruned"]
    else:  # its pooled features are not the original's: a projection of its own (`fit` fits one too)
        result = with_projection(pruned, data.train.images)
    before, after = measure_models(
        [(trained.build(), spec), (result.build(), spec)],
        data.test.images,
        data.test.targets,
        config.latency_repeats,
        config.latency_rounds,
    )
    trained_on = trained.info.get("data_hash")
    report = PruneReport(
        arch=trained.arch,
        amount=config.amount,
        finetune_epochs=config.epochs,
        before=before,
        after=after,
        accuracy_pruned_not_finetuned=accuracy_pruned,
        batchnorm_recalibrated=config.recalibration_images > 0,
        data_matches_training=None if trained_on is None else trained_on == data.data_hash,
    )
    result.info["prune_report"] = report.to_dict()
    return result, report
