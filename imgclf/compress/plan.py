"""What the train step ships when compression is configured: distil into a smaller student first, then
prune channels of whatever that leaves, each step optional. In this order pruning works on the network
that ships; pruning the teacher first would only make it a weaker teacher."""

from __future__ import annotations

from dataclasses import dataclass

from imgclf.augment.policy import AugmentPolicy
from imgclf.compress.distill import DistillConfig, DistillReport, distill
from imgclf.compress.prune import PruneConfig, PruneReport, prune_and_finetune
from imgclf.data.manifest import DatasetManifest
from imgclf.models.trained import TrainedModel


@dataclass
class Compressed:
    model: TrainedModel  # what ships: the pruned student, the student, the pruned model, or the input
    distill_report: DistillReport | None = None
    prune_report: PruneReport | None = None


def compress(
    trained: TrainedModel,
    split: DatasetManifest,
    policy: AugmentPolicy = AugmentPolicy(),
    distill_into: DistillConfig | None = None,
    prune: PruneConfig | None = None,
) -> Compressed:
    """Distil `trained` (when `distill_into` is set), then prune the result (when `prune` is set), both
    on the split `trained` was trained with."""
    result = Compressed(trained)
    if distill_into is not None:
        result.model, _alone, result.distill_report = distill(result.model, split, distill_into, policy)
    if prune is not None:
        result.model, result.prune_report = prune_and_finetune(result.model, split, prune, policy)
    return result
