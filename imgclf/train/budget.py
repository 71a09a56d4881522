"""The training budget chosen from the data: every "auto" (and `lr: find`) of a TrainConfig is
decided here and nowhere else, and each decision is recorded with its reason.

- `image_size: auto`: the median short side of the training images, to the nearest multiple of 32,
  kept within [MIN_IMAGE_SIZE, MAX_IMAGE_SIZE]. Upscaling tiny sources further adds cost, not detail;
  below the floor an ImageNet network's last stages see a map of a pixel or two. The cap is the size
  the ImageNet weights were trained at; every pixel above it costs CPU time quadratically.
- `epochs: auto`: enough epochs to show the network about IMAGES_SEEN training images, within
  [MIN_EPOCHS, MAX_EPOCHS]: a small data set gets many passes, a large one few, and the run length in
  images stays about the same. Early stopping (`early_stopping_patience`) ends a run whose val score
  has stopped improving, and the best epoch's weights are the ones kept.
- a batch of more than MAX_BATCH_PIXELS is trained as micro-batches with gradient accumulation
  (`accumulate_steps`), so the effective batch stays `batch_size` while a step's activations stay
  bounded: a batch of 64 at 224 px holds more than the memory goal of a step (README: Memory at scale).
- `lr: find`: the LR finder's suggestion (`imgclf.train.lr_finder`) for the network about to be
  trained, swept on the train split.
- the warmup is `warmup_epochs` of linear warmup, then the cosine (or step) schedule.

README ("Training defaults") has the old-vs-new comparison on data sets these rules were not tuned on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from imgclf.data.decoded import DecodedSplit
from imgclf.data.manifest import DatasetManifest
from imgclf.preprocess import PreprocessSpec
from imgclf.train.config import TrainConfig

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, IMAGE_SIZE_STEP = 64, 224, 32
IMAGES_SEEN = 20_000
MIN_EPOCHS, MAX_EPOCHS = 5, 30
MAX_BATCH_PIXELS = 32 * 224 * 224


@dataclass(frozen=True)
class Budget:
    """A config with its "auto" values decided, and why each was decided so."""

    config: TrainConfig
    reasons: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return "; ".join(f"{name} {getattr(self.config, name)}: {why}" for name, why in self.reasons.items())


def resolve(config: TrainConfig, train: DatasetManifest) -> Budget:
    """Decide `image_size` and `epochs` of `config` from its training rows `train`, and split a batch
    too large for memory into micro-batches (a "find" LR is decided later, by `find_lr`, once the
    network exists)."""
    if not len(train):
        raise ValueError("the training budget needs training images: the train split is empty")
    decided: dict[str, int] = {}
    reasons: dict[str, str] = {}
    if config.image_size == "auto":
        decided["image_size"], reasons["image_size"] = image_size_for(train)
    if config.epochs == "auto":
        decided["epochs"], reasons["epochs"] = epochs_for(len(train))
    size = decided.get("image_size", config.image_size)
    if config.accumulate_steps == 1 and config.batch_size * size**2 > MAX_BATCH_PIXELS:
        steps = micro_batches(config.batch_size, size)
        decided["batch_size"], decided["accumulate_steps"] = config.batch_size // steps, steps
        reasons["accumulate_steps"] = f"a batch of {config.batch_size} at {size} px, in {steps} micro-batches"
    return Budget(config.model_copy(update=decided), reasons)


def micro_batches(batch_size: int, image_size: int) -> int:
    """The fewest micro-batches, each within MAX_BATCH_PIXELS, that split `batch_size` exactly (so the
    effective batch stays `batch_size`)."""
    needed = math.ceil(batch_size * image_size**2 / MAX_BATCH_PIXELS)
    return next(k for k in range(needed, batch_size + 1) if batch_size % k == 0)


def image_size_for(train: DatasetManifest) -> tuple[int, str]:
    short_sides = np.minimum(train.records["width"].to_numpy(float), train.records["height"].to_numpy(float))
    median = float(np.median(short_sides))
    size = round(median / IMAGE_SIZE_STEP) * IMAGE_SIZE_STEP
    size = min(MAX_IMAGE_SIZE, max(MIN_IMAGE_SIZE, size))
    return size, f"median short side of the training images {median:g} px, within [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}]"


def epochs_for(train_images: int) -> tuple[int, str]:
    epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(IMAGES_SEEN / train_images)))
    return epochs, f"{train_images} training images, about {IMAGES_SEEN} seen, within [{MIN_EPOCHS}, {MAX_EPOCHS}]"


def find_lr(budget: Budget, model: nn.Module, train: DecodedSplit, spec: PreprocessSpec) -> Budget:
    """`budget` with `lr: find` replaced by the LR finder's suggestion for `model` on the train split,
    swept with the run's own optimiser settings (the sweep leaves the model as it was)."""
    config = budget.config
    if config.lr != "find":
        return budget
    from imgclf.train.lr_finder import find_lr as sweep
    from imgclf.train.optim import build_optimizer

    targets = np.asarray(train.targets)
    if targets.ndim != 1:
        raise ValueError("lr: find sweeps a single-label loss; give a multi-label run a number for lr")
    result = sweep(
        model,
        train.images,
        targets,
        spec,
        batch_size=config.batch_size,
        optimizer_factory=lambda m: build_optimizer(m, config.model_copy(update={"lr": 1.0})),
        channels_last=config.channels_last,
    )
    reason = f"the LR finder's {result.method} suggestion over {len(result.lrs)} steps on the train split"
    return Budget(config.model_copy(update={"lr": result.suggested_lr}), {**budget.reasons, "lr": reason})
