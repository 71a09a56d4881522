"""One training epoch: forward and backward passes over the epoch's batches and the optimiser steps
they add up to (gradient accumulation, clipping, LR schedule, EMA), under the transfer mode's freeze.

Long epochs log progress lines (`imgclf.logs.Progress`, the main process only); quick ones stay quiet.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from imgclf.logs import Progress
from imgclf.models.factory import set_backbone_trainable
from imgclf.train import distributed
from imgclf.train.batches import Batch, TrainBatches
from imgclf.train.config import TrainConfig
from imgclf.train.distributed import Dist
from imgclf.train.objective import Objective
from imgclf.train.state import TrainState

log = logging.getLogger(__name__)


def autocast(config: TrainConfig, device: torch.device):
    """bf16 autocast where it pays: on GPUs under `amp="auto"`, anywhere under `amp="bf16"`."""
    use_bf16 = config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()


def backbone_frozen(config: TrainConfig, epoch: int) -> bool:
    """Whether the transfer mode keeps the backbone frozen in `epoch`."""
    if config.transfer == "linear_probe":
        return True
    return config.transfer == "freeze_then_unfreeze" and epoch <= config.freeze_epochs


@dataclass
class _Tally:
    """Running totals of an epoch on this rank."""

    multi_label: bool
    total_images: int  # the training split's size, for the epoch's coverage
    started: float = field(default_factory=time.perf_counter)
    seen: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    rows: list[torch.Tensor] = field(default_factory=list)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor) -> None:
        self.seen += len(labels)
        self.rows.append(rows)
        self.loss_sum += float(loss.detach()) * len(labels)
        if not self.multi_label:
            self.correct += int((logits.argmax(1) == labels).sum())

    def metrics(self, dist: Dist) -> dict[str, float]:
        """train_loss (and train_accuracy) averaged over the ranks; images/s, images trained on and how
        many of them distinct, of all ranks together."""
        elapsed = time.perf_counter() - self.started
        rows = torch.cat(self.rows) if self.rows else torch.zeros(0, dtype=torch.int64)
        images, distinct = distributed.coverage(rows, self.total_images, dist)
        metrics = {
            "train_loss": distributed.all_ranks_mean(self.loss_sum / max(self.seen, 1), dist),
            "train_images_per_s": self.seen * dist.world_size / elapsed,
            "train_images": images,
            "train_distinct_images": distinct,
        }
        if not self.multi_label:
            metrics["train_accuracy"] = distributed.all_ranks_mean(self.correct / max(self.seen, 1), dist)
        return metrics


@dataclass
class EpochTrainer:
    """Trains `state`'s model one epoch at a time; keeps the module that runs forward (the model, or
    its DDP / compiled wrapper) from one epoch to the next."""

    state: TrainState
    batches: TrainBatches
    objective: Objective
    config: TrainConfig
    dist: Dist
    _frozen: bool | None = None
    _train_model: nn.Module | None = None

    def train(self, epoch: int) -> dict[str, float]:
        """Train one epoch; its training metrics."""
        train_model = self._model_for(epoch)
        self.state.model.train()  # a frozen backbone's norm layers stay in eval mode (set_backbone_trainable's hook)
        accumulate = self.config.accumulate_steps
        tally, number = _Tally(self.objective.multi_label, len(self.batches.targets)), 0
        progress = self._progress(epoch)
        self.state.optimizer.zero_grad(set_to_none=True)
        for number, batch in enumerate(self.batches.epoch(epoch), start=1):
            loss, logits = self._forward_backward(train_model, batch)
            if number % accumulate == 0:
                self._step()
            tally.add(loss, logits, batch.labels, batch.rows)
            if progress is not None:
                progress.advance(len(batch.labels))
        if tally.seen and number % accumulate:  # a partial accumulation at the end of the epoch
            self._step()
        if progress is not None:
            progress.finish()
        return tally.metrics(self.dist)

    def _model_for(self, epoch: int) -> nn.Module:
        """The module to run forward: freeze or thaw the backbone as the transfer mode says; DDP (or
        torch.compile) is rebuilt when the set of trained parameters changes."""
        frozen = backbone_frozen(self.config, epoch)
        if frozen != self._frozen:
            model = self.state.model
            set_backbone_trainable(model, not frozen)
            self._frozen = frozen
            if self.dist.enabled:
                self._train_model = torch.nn.parallel.DistributedDataParallel(model)
            elif self.config.compile:
                self._train_model = torch.compile(model)
            else:
                self._train_model = model
        return self._train_model

    def _forward_backward(self, train_model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(self.config, self.dist.device):
            logits = train_model(batch.x)
            loss = self.objective.train_loss(logits.float(), batch.target, batch.x)
        (loss / self.config.accumulate_steps).backward()
        return loss, logits

    def _step(self) -> None:
        """One optimiser step from the accumulated gradients (clipped), then the schedule and the EMA."""
        state = self.state
        if self.config.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(state.model.parameters(), self.config.grad_clip_norm)
        state.optimizer.step()
        state.optimizer.zero_grad(set_to_none=True)
        state.scheduler.step()
        if state.ema is not None:
            state.ema.update(state.model)

    def _progress(self, epoch: int) -> Progress | None:
        if not self.dist.is_main:
            return None
        what = f"epoch {epoch}/{self.config.epochs}" + (" (rank 0's share)" if self.dist.enabled else "")
        return Progress(what, self.batches.images_in_epoch(epoch), log, unit="images")
