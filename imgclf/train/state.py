"""The state of a training run: everything a checkpoint holds and a resume puts back.

Model, optimiser, LR schedule, EMA, the epoch, the best score and its weights, the history, torch's
random state, and the state of the epoch hooks that have one (early stopping's count). Saved through
`imgclf.train.checkpoint`: atomic writes, so a kill at any moment leaves the previous complete
checkpoint, and `torch.load(weights_only=True)` on the way back.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from imgclf.train import checkpoint

log = logging.getLogger(__name__)

FORMAT = 2  # the layout of `state_dict`; checkpoints of another layout are refused, not misread


class Stateful(Protocol):
    """An epoch hook whose state the checkpoint carries, under its `key`."""

    key: str

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainState:
    """The run as of its last complete epoch (see the module doc); `end_epoch` moves it on."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    resume_key: str  # TrainConfig.resume_key(): a checkpoint written under another one is refused
    ema: Any = None  # timm's ModelEmaV3, when the config keeps an EMA of the weights
    hooks: list[Stateful] = field(default_factory=list)
    epoch: int = 0  # the last complete epoch
    best_score: float = -math.inf
    best_epoch: int = 0
    best_weights: dict[str, torch.Tensor] | None = None  # on the CPU
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_after_epoch: int = 0

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and shipped: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def end_epoch(self, metrics: dict[str, float]) -> None:
        """Record the epoch just trained; keep its weights when its val_score is the best so far."""
        self.epoch += 1
        self.history.append({"epoch": self.epoch, **metrics})
        if metrics["val_score"] > self.best_score:
            self.best_score, self.best_epoch = metrics["val_score"], self.epoch
            self.best_weights = {
                k: v.detach().cpu().clone().contiguous() for k, v in self.eval_model.state_dict().items()
            }

    @property
    def improved(self) -> bool:
        """Whether the last epoch set the best score."""
        return self.epoch > 0 and self.best_epoch == self.epoch

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain containers only: what `torch.load(weights_only=True)` reads back."""
        return {
            "format": FORMAT,
            "resume_key": self.resume_key,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "rng": _rng_state(),
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "hooks": {hook.key: hook.state_dict() for hook in self.hooks},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.module.load_state_dict(state["ema"])
        _set_rng_state(state["rng"])
        self.epoch, self.best_score, self.best_epoch = state["epoch"], state["best_score"], state["best_epoch"]
        self.history = list(state["history"])
        for hook in self.hooks:
            if hook.key in state["hooks"]:
                hook.load_state_dict(state["hooks"][hook.key])

    def save(self, directory: str | Path) -> None:
        """Checkpoint the run after an epoch; the best weights too when that epoch improved them."""
        checkpoint.save(directory, self.state_dict(), self.best_weights if self.improved else None)

    def restore(self, directory: str | Path) -> None:
        """Continue from the last complete checkpoint in `directory`, if there is one.

        Refuses a checkpoint written under another training config (`resume_key`)."""
        restored = checkpoint.load(directory)
        if restored is None:
            return
        state, best_weights = restored
        if state.get("format") != FORMAT:
            raise ValueError(
                f"checkpoint in {directory} was written by another version of imgclf; "
                "use another checkpoint folder or delete it to start afresh"
            )
        if state["resume_key"] != self.resume_key:
            raise ValueError(
                f"checkpoint in {directory} was written with a different training config; "
                "use another checkpoint folder or delete it to start afresh"
            )
        self.load_state_dict(state)
        self.best_weights, self.resumed_after_epoch = best_weights, self.epoch
        log.info("resuming from %s after epoch %d", directory, self.epoch)


def _rng_state() -> dict[str, torch.Tensor]:
    """torch's generator on the CPU, and on the current GPU when there is one (dropout, mixing)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
