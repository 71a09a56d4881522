"""The training split as the model sees it, one epoch at a time: cached uint8 images augmented in the
loader's workers, then on the device, normalised, in the model's memory format, and mixed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from imgclf.augment.batched import BatchAugment
from imgclf.augment.policy import AugmentPolicy, BatchMix
from imgclf.data.decoded import DecodedSplit
from imgclf.data.loader import CacheLoader, IndicesForEpoch
from imgclf.preprocess import PreprocessSpec
from imgclf.train.config import TrainConfig
from imgclf.train.distributed import Dist


class Batch(NamedTuple):
    x: torch.Tensor  # the model input
    labels: torch.Tensor  # the batch's own targets (class indices or multi-hot rows)
    target: torch.Tensor  # what the loss compares with: `labels`, or the soft targets of a mixed batch
    rows: torch.Tensor  # the training rows the batch holds (which images this rank saw)


@dataclass
class TrainBatches:
    """This rank's training batches, epoch by epoch, ready for the model."""

    loader: CacheLoader
    spec: PreprocessSpec
    targets: torch.Tensor  # every training row's target: int64 class indices, or float32 multi-hot rows
    mix: BatchMix | None
    device: torch.device
    channels_last: bool

    @classmethod
    def build(
        cls,
        split: DecodedSplit,
        policy: AugmentPolicy,
        spec: PreprocessSpec,
        config: TrainConfig,
        dist: Dist,
        num_classes: int,
    ) -> TrainBatches:
        """Each rank loads its own share of every epoch, `batch_size / world_size` images a batch."""
        targets = np.asarray(split.targets)
        multi_label = targets.ndim == 2
        per_rank_batch = max(1, config.batch_size // dist.world_size)
        loader = CacheLoader(
            split.images,
            np.arange(len(targets)),
            per_rank_batch,
            augment=BatchAugment.from_policy(policy, spec.image_size),
            seed=config.seed,
            indices_for_epoch=_rank_share(
                policy, targets.argmax(1) if multi_label else targets, dist, _epoch_cap(config)
            ),
            num_workers=config.num_workers,
            drop_last=len(targets) // dist.world_size > per_rank_batch,  # a batch of 1 breaks BatchNorm
        )
        as_tensor = torch.from_numpy(targets.astype(np.float32) if multi_label else targets.astype(np.int64))
        return cls(loader, spec, as_tensor, policy.build_mix(num_classes), dist.device, config.channels_last)

    def batches_per_epoch(self) -> int:
        return self.loader.batches_per_epoch(1)

    def images_in_epoch(self, epoch: int) -> int:
        return sum(len(indices) for _, indices in self.loader.epoch_plan(epoch))

    def epoch(self, epoch: int) -> Iterator[Batch]:
        for images, rows in self.loader.epoch(epoch):
            x = self.spec.normalize(images.to(self.device, non_blocking=True))
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            labels = self.targets[rows].to(self.device)
            target = labels
            if self.mix is not None:
                x, target = self.mix(x, labels)
            yield Batch(x, labels, target, rows)

    def close(self) -> None:
        self.loader.close()


def _epoch_cap(config: TrainConfig) -> int | None:
    """Images in an epoch under `max_steps_per_epoch` (all ranks together), or None: no cap."""
    if config.max_steps_per_epoch is None:
        return None
    return config.max_steps_per_epoch * config.batch_size * config.accumulate_steps


def _rank_share(policy: AugmentPolicy, labels: np.ndarray, dist: Dist, cap: int | None) -> IndicesForEpoch:
    """The policy's epoch order (class-balanced when it asks), its first `cap` images when capped
    (a fresh random subset each epoch), cut to this rank's share."""

    def epoch_indices(epoch: int, rng: np.random.Generator) -> np.ndarray:
        order = policy.epoch_indices(labels, rng)[:cap]
        order = order[: len(order) - len(order) % dist.world_size]  # equal shares: DDP ranks step together
        return order[dist.rank :: dist.world_size]  # each rank a disjoint share of the epoch

    return epoch_indices
