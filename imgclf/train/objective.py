"""What training minimises and what model selection maximises, for single-label data (cross-entropy,
accuracy) and multi-label data (BCE on multi-hot targets, macro mAP)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# (logits, targets, model input) -> loss: the training loss with the batch the model saw (augmented,
# mixed, normalised), e.g. knowledge distillation, where the teacher must see that same batch
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Objective:
    """The training loss and the validation loss and score. Validation keeps the plain loss (no
    label smoothing, no replacement `loss_fn`), so scores compare across runs."""

    multi_label: bool
    train_loss: LossFn
    val_criterion: nn.Module

    @classmethod
    def build(cls, multi_label: bool, label_smoothing: float, loss_fn: LossFn | None = None) -> Objective:
        """BCE for multi-label targets, cross-entropy (label-smoothed in training) otherwise; `loss_fn`
        replaces the training loss."""
        if multi_label:
            criterion: nn.Module = nn.BCEWithLogitsLoss()
            val_criterion: nn.Module = nn.BCEWithLogitsLoss()
        else:
            criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
            val_criterion = nn.CrossEntropyLoss()
        return cls(multi_label, loss_fn or (lambda logits, target, x: criterion(logits, target)), val_criterion)

    def val_metrics(self, logits: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """val_loss and val_score (accuracy, or macro mAP over the classes present), also under their
        own names (val_accuracy / val_map)."""
        if not len(targets):
            return {"val_loss": float("nan"), "val_score": 0.0}
        t = torch.from_numpy(targets)
        loss = float(self.val_criterion(torch.from_numpy(logits), t.float() if self.multi_label else t))
        if self.multi_label:
            score = _macro_map(logits, targets)
            return {"val_loss": loss, "val_map": score, "val_score": score}
        accuracy = float((logits.argmax(1) == targets).mean())
        return {"val_loss": loss, "val_accuracy": accuracy, "val_score": accuracy}


def _macro_map(logits: np.ndarray, targets: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    present = targets.sum(0) > 0
    if not present.any():
        return 0.0
    return float(average_precision_score(targets[:, present], logits[:, present], average="macro"))
