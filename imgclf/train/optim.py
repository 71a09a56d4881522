"""The optimiser and its LR schedule, built from a TrainConfig: what the training loop steps and what
the LR finder sweeps, so the finder's curve describes the optimiser that will use its suggestion."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from imgclf.models.factory import backbone_parameters, head_parameters
from imgclf.train.config import TrainConfig


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, backbone_lr_scale: float = 1.0
) -> list[dict[str, Any]]:
    """Head at `lr`, backbone at `lr * backbone_lr_scale`; no weight decay on norms and biases (1-D
    tensors). Each group records its `lr_scale`, so a sweep can move every group's LR together.

    Frozen parameters are included: they get no gradient, so the optimiser skips them until they thaw.
    """
    if backbone_lr_scale == 1.0:
        parts = [(list(model.parameters()), 1.0)]  # one LR: no head to find (any module will do)
    else:
        parts = [(head_parameters(model), 1.0), (backbone_parameters(model), backbone_lr_scale)]
    groups = []
    for params, scale in parts:
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        for subset, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if subset:
                groups.append({"params": subset, "weight_decay": wd, "lr": lr * scale, "lr_scale": scale})
    return groups


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """`config.optimizer` (AdamW, or SGD with Nesterov momentum) over `param_groups`."""
    groups = param_groups(model, config.lr, config.weight_decay, config.backbone_lr_scale)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


def lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The multiplier of each group's LR at an optimiser step: linear warmup, then cosine to zero over
    the run, or a step decay every `step_epochs` epochs."""
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


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """A per-optimiser-step LambdaLR following `lr_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, steps_per_epoch))
