"""Training batches from the decoded uint8 cache, augmented in worker processes, reproducible by seed.

`CacheLoader` turns the cache (an `.npy` file of resized uint8 images, see imgclf.data.cache) into
batches of `(uint8 images (B, 3, H, W), int64 labels (B,))`; normalisation stays with
`PreprocessSpec.normalize`. The augmentation it applies in its workers is any callable; training
passes `imgclf.augment.batched.BatchAugment`, the AugmentPolicy's ops batched.

Why this shape (`python bench/data_loading.py` measures each choice; `--train` feeds a training step):
- Worker processes, not threads: loading alone, threads are as fast or faster, but the loader exists
  to feed a training step that already uses every core through torch's process-wide intra-op
  threads. Feeding one, worker processes come close to batches already in memory, so loading no
  longer limits training; threads are the one way that costs real time.
- Workers map the cache file by path (never a pickled copy of the array) and receive only
  `(seed, indices)` per batch, so memory does not grow with the data set or the worker count.

Reproducibility: the batches of an epoch come from a generator seeded with `(seed, epoch)`, and each
batch is augmented with its own generator seeded with `(seed, epoch, batch number)`. Same seed ->
same batches and the same augmentations, whatever `num_workers` is (0 included), and the loader
never touches torch's global random state.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

Batch = tuple[torch.Tensor, torch.Tensor]
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
IndicesForEpoch = Callable[[int, np.random.Generator], Sequence[int]]


def default_workers() -> int:
    """Two worker processes where there are two cores or more: the most loading throughput on 2 cores,
    and within measurement noise of 0 or 1 worker when a training step is what takes the time."""
    return min(2, os.cpu_count() or 1)


class CacheLoader:
    """Batches over a uint8 (N, H, W, 3) image cache for training, one epoch at a time.

    images: the cache `.npy` path (preferred) or an array; a memory-mapped `.npy` is reopened by path
        in each worker, an in-memory array is inherited by the workers.
    augment: called as `augment(batch_uint8_nchw, generator)`, e.g. `BatchAugment.from_policy(...)`.
    indices_for_epoch: `f(epoch, rng) -> indices` (repeats allowed), e.g. class-balanced sampling;
        default: every index once, shuffled (or in order with `shuffle=False`).
    num_workers: 0 loads in the calling process; workers persist across epochs.
    """

    def __init__(
        self,
        images: np.ndarray | str | Path,
        labels: np.ndarray | Sequence[int],
        batch_size: int,
        *,
        augment: Augment | None = None,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        indices_for_epoch: IndicesForEpoch | None = None,
        num_workers: int | None = None,
        prefetch_batches: int = 2,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.dataset = _CachedBatches(images, labels, augment)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.indices_for_epoch = indices_for_epoch
        self.num_workers = default_workers() if num_workers is None else num_workers
        self._keys = _EpochKeys()
        self._loader: torch.utils.data.DataLoader | None = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=None,  # the dataset returns whole batches
            sampler=self._keys,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            prefetch_factor=prefetch_batches if self.num_workers > 0 else None,
            generator=torch.Generator().manual_seed(seed),  # keeps the global torch RNG untouched
            pin_memory=torch.cuda.is_available(),  # page-locked batches copy to the GPU asynchronously
        )

    def batches_per_epoch(self, epoch: int = 1) -> int:
        return len(self.epoch_plan(epoch))

    def epoch_plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """The epoch's batches as (augmentation seed, sorted image indices); cheap, no pixels read."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.dataset)
        if self.indices_for_epoch is not None:
            order = np.asarray(self.indices_for_epoch(epoch, rng))
            if order.ndim != 1 or (order.size and not np.issubdtype(order.dtype, np.integer)):
                raise ValueError(f"indices_for_epoch must return 1-D integer indices, got {order.dtype} {order.shape}")
            order = order.astype(np.int64, copy=False)
            if order.size and (order.min() < 0 or order.max() >= n):
                raise ValueError(f"indices_for_epoch returned indices outside [0, {n}): {order.min()}..{order.max()}")
        else:
            order = rng.permutation(n) if self.shuffle else np.arange(n)
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        plan = []
        for number, start in enumerate(range(0, stop, self.batch_size)):
            batch_seed = int(np.random.SeedSequence([self.seed, epoch, number]).generate_state(1, np.uint64)[0] >> 1)
            # sorted: reads from the memory-mapped cache stay mostly sequential; order within a batch is irrelevant
            plan.append((batch_seed, np.sort(order[start : start + self.batch_size])))
        return plan

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """Yield the batches of `epoch` (any int; use the training loop's epoch number) in plan order."""
        if self._loader is None:
            raise RuntimeError("this CacheLoader is closed")
        self._keys.keys = self.epoch_plan(epoch)
        yield from self._loader

    def close(self) -> None:
        """Stop the worker processes now rather than when the loader is garbage-collected."""
        self._loader = None

    def __enter__(self) -> CacheLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _EpochKeys(torch.utils.data.Sampler):
    """The current epoch's plan; read in the main process each time the DataLoader starts an epoch."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, np.ndarray]] = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class _CachedBatches(torch.utils.data.Dataset):
    """dataset[(seed, indices)] -> (augmented uint8 images (B, 3, H, W), int64 labels (B,))."""

    def __init__(self, images: np.ndarray | str | Path, labels, augment: Augment | None) -> None:
        self.path, self._array = _image_source(images)
        array = self._images()
        if array.ndim != 4 or array.shape[3] != 3 or array.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {array.dtype} {array.shape}")
        self.labels = np.asarray(labels, dtype=np.int64)
        if self.labels.shape != (len(array),):
            raise ValueError(f"{len(array)} images but labels have shape {self.labels.shape}")
        self.augment = augment
        if self.path is not None:
            self._array = None  # each process (worker or main) maps the file itself, on first use

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, np.ndarray]) -> Batch:
        seed, indices = key
        x = torch.from_numpy(np.asarray(self._images()[indices])).permute(0, 3, 1, 2)
        if self.augment is not None:
            x = self.augment(x, torch.Generator().manual_seed(seed))
        return x, torch.from_numpy(self.labels[indices])

    def _images(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")  # once per process
        return self._array

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.path is not None:
            state["_array"] = None  # spawned workers map the file by path; pickling a memmap copies it
        return state


def _image_source(images: np.ndarray | str | Path) -> tuple[Path | None, np.ndarray | None]:
    """(path, None) for a cache file or a memory map of a whole `.npy`; (None, array) otherwise."""
    if isinstance(images, (str, Path)):
        return Path(images), None
    if isinstance(images, np.memmap) and images.filename and str(images.filename).endswith(".npy"):
        try:
            whole = np.load(images.filename, mmap_mode="r")
        except (OSError, ValueError):
            whole = None
        if whole is not None and whole.shape == images.shape and images.flags.c_contiguous:
            return Path(images.filename), None  # the whole file, not a slice of it
    return None, np.asarray(images)
