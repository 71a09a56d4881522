"""Epoch hooks: what happens after each epoch besides training, one small object per job, each owning
its state (Lightning's callbacks, reduced to the one event the loop needs).

The loop calls `on_epoch_end(state, metrics)` on each hook in order once the epoch is recorded in the
state, then stops when a hook's `should_stop` says so. A hook with a `key` has state the checkpoint
carries (`state_dict` / `load_state_dict`), so a resumed run continues it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imgclf.train.state import TrainState

log = logging.getLogger(__name__)

OnEpoch = Callable[[dict[str, float], int], None]


class EpochHook:
    key = ""  # non-empty: the checkpoint carries this hook's state under this name

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        pass

    @property
    def should_stop(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class EarlyStopping(EpochHook):
    """Stop after `patience` epochs in a row without a better val_score (None: count, never stop)."""

    key = "early_stopping"

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.bad_epochs = 0

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        self.bad_epochs = 0 if state.improved else self.bad_epochs + 1
        if self.should_stop:
            log.info("early stop after epoch %d: no val improvement for %d epochs", state.epoch, self.bad_epochs)

    @property
    def should_stop(self) -> bool:
        return bool(self.patience) and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bad_epochs = state["bad_epochs"]


class EpochMetrics(EpochHook):
    """Hand each epoch's metrics to `on_epoch(metrics, epoch)`, e.g. the train step's MLflow logging."""

    def __init__(self, on_epoch: OnEpoch) -> None:
        self.on_epoch = on_epoch

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        self.on_epoch(metrics, state.epoch)


class TensorBoard(EpochHook):
    """Write each epoch's metrics as TensorBoard scalars in `directory`."""

    def __init__(self, directory: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(directory))

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, state.epoch)

    def close(self) -> None:
        self.writer.close()


class Checkpointing(EpochHook):
    """Save the training state to `directory` after every epoch (put it last: it saves the other
    hooks' state as they left it)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = directory

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        state.save(self.directory)
