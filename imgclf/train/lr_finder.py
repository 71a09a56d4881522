"""Learning-rate range test, fastai style (`imgclf lr-find`): sweep the LR, suggest one, plot the curve.

The sweep trains on mini-batches while the learning rate grows geometrically from `start_lr` to
`end_lr`, records an exponentially smoothed loss at each step, and stops once that loss exceeds
`diverge_factor` times the best one seen: past that point the curve says nothing new.

The suggestion is fastai's "valley" heuristic (its default since 2021, fastai/fastai#3377): take
the longest strictly decreasing run of the smoothed loss (a longest decreasing subsequence, so an odd
noisy step does not cut it short) and return the LR halfway along it. Why not the steepest gradient:
that is the single point where d(loss)/d(log lr) is most negative, so one noisy step can move it by
decades; the valley depends on the shape of the whole descent. Being inside its valley, the
suggestion is always below the LR where the sweep stopped.

The sweep has no side effects on the model: parameters and buffers (values and memory layout),
gradients, train/eval mode and torch's random state are put back afterwards. Free of ZenML.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imgclf.inference import model_input
from imgclf.logs import progress
from imgclf.preprocess import PreprocessSpec
from imgclf.train.config import TrainConfig
from imgclf.train.optim import build_optimizer

log = logging.getLogger(__name__)

METHOD = "valley"
OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]


@dataclass
class LRFinderResult:
    """One sweep: the LR of each step, the smoothed loss measured at it, and the suggestion.

    `diverged_lr` is the LR at which the sweep stopped because the loss blew up (None when it ran
    to `end_lr`).
    """

    lrs: list[float]
    losses: list[float]
    suggested_lr: float
    method: str
    diverged_lr: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def plot(self, path: str | Path) -> Path:
        """Save the loss-vs-LR curve (log x) with the suggestion marked as a PNG; returns the path.

        Draws on a bare `Figure` (Agg canvas), not pyplot, so it never touches the process-wide
        matplotlib backend or leaks open figures.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig = Figure(figsize=(6.4, 4.2), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.plot(self.lrs, self.losses, color="tab:blue", label="smoothed training loss")
        ax.set_xscale("log")
        loss_at = float(np.interp(math.log(self.suggested_lr), np.log(self.lrs), self.losses))
        ax.plot(
            [self.suggested_lr],
            [loss_at],
            "o",
            color="tab:red",
            markersize=8,
            label=f"suggested lr {self.suggested_lr:.2e} ({self.method})",
        )
        ax.axvline(self.suggested_lr, color="tab:red", linestyle=":", linewidth=1)
        if self.diverged_lr is not None:
            ax.axvline(
                self.diverged_lr, color="grey", linestyle="--", linewidth=1, label=f"diverged at {self.diverged_lr:.2e}"
            )
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.set_title("LR range test")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, format="png")
        return path


def suggest_lr(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """fastai's valley: the LR halfway along the longest strictly decreasing run of `losses`.

    The first tenth of the curve is left out, as fastai does: the smoothed loss there is still
    close to single noisy batches.
    """
    if len(lrs) != len(losses) or len(lrs) < 2:
        raise ValueError(f"need matching lrs and losses with at least 2 points, got {len(lrs)} and {len(losses)}")
    skip = len(losses) // 10
    first, last = _longest_descent(losses[skip:])
    if first == last:
        raise ValueError(
            f"the loss never decreased between lr {lrs[skip]:.2e} and {lrs[-1]:.2e}; "
            "lower start_lr, or check that the labels match the images"
        )
    return float(lrs[skip + first + (last - first) // 2])


def _longest_descent(values: Sequence[float]) -> tuple[int, int]:
    """(first, last) index of the longest strictly decreasing subsequence; of equally long ones, the
    tightest (latest start, earliest end), so a flat stretch before the descent is not counted in it.

    O(n^2) dynamic programming: n is a few hundred steps at most, and tracking where each
    subsequence starts gives the valley's true start (fastai estimates it from the length alone).
    """
    length = [1] * len(values)
    start = list(range(len(values)))
    for i in range(len(values)):
        for j in range(i):
            if values[i] < values[j] and (length[j] + 1, start[j]) > (length[i], start[i]):
                length[i], start[i] = length[j] + 1, start[j]
    last = max(range(len(values)), key=lambda i: (length[i], start[i], -i))
    return start[last], last


def default_optimizer(model: nn.Module, config: TrainConfig | None = None) -> torch.optim.Optimizer:
    """The optimiser `config` trains with (default: TrainConfig's defaults: AdamW, its weight decay,
    none on norms and biases), so the curve describes the optimiser that will use the suggestion.
    Pass `functools.partial(default_optimizer, config=...)` as the factory for SGD or for
    discriminative LRs (the sweep keeps the backbone's `backbone_lr_scale`)."""
    return build_optimizer(model, config or TrainConfig())


def find_lr(
    model: nn.Module,
    images_uint8_nhwc: np.ndarray,
    labels: np.ndarray,
    spec: PreprocessSpec,
    *,
    criterion: nn.Module | None = None,
    optimizer_factory: OptimizerFactory | None = None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    batch_size: int = 64,
    smooth: float = 0.05,
    diverge_factor: float = 4.0,
    seed: int = 0,
    channels_last: bool = False,
) -> LRFinderResult:
    """Sweep the LR geometrically over `num_steps` mini-batches and suggest one (see module doc).

    `images_uint8_nhwc` is the decoded cache (uint8 (N, H, W, 3), memory-mapped is fine); batches
    are drawn in a seeded shuffle, cycling through the data when the sweep is longer than an epoch.
    `smooth` is the weight of the newest batch in the (bias-corrected) moving average of the loss.
    `optimizer_factory(model)` builds the optimizer (default: `default_optimizer`); every param
    group gets the swept LR (times its `lr_scale`, when it has one). The model trains on its own
    device and is restored afterwards.
    """
    images, labels = images_uint8_nhwc, np.asarray(labels)
    _check_data(images, labels, spec)
    _check_sweep(start_lr, end_lr, num_steps, batch_size, smooth, diverge_factor)
    criterion = criterion if criterion is not None else nn.CrossEntropyLoss()
    device = next(model.parameters()).device
    targets = torch.from_numpy(labels.astype(np.int64)).to(device)
    batches = _cycled_batches(len(images), min(batch_size, len(images)), np.random.default_rng(seed))

    def next_loss() -> torch.Tensor:
        idx = next(batches)
        return criterion(model(model_input(images[idx], spec, device, channels_last)), targets[idx])

    with _restored(model), _seeded_torch(seed, device):
        if channels_last:
            model.to(memory_format=torch.channels_last)
        model.train()
        optimizer = (optimizer_factory or default_optimizer)(model)
        schedule = np.geomspace(start_lr, end_lr, num_steps).tolist()
        lrs, losses, diverged_lr = _sweep(next_loss, optimizer, schedule, _SmoothedLoss(smooth, diverge_factor))

    if len(losses) < 2:
        raise ValueError(f"the loss diverged within the first steps (at lr {diverged_lr:.2e}); lower start_lr")
    result = LRFinderResult(lrs, losses, suggest_lr(lrs, losses), METHOD, diverged_lr)
    diverged = f", diverged at {diverged_lr:.1e}" if diverged_lr is not None else ""
    sweep = f"{len(lrs)} steps from {lrs[0]:.1e} to {lrs[-1]:.1e}{diverged}"
    log.info("lr-find: %s; suggested lr %.2e (%s)", sweep, result.suggested_lr, METHOD)
    return result


def _check_data(images: np.ndarray, labels: np.ndarray, spec: PreprocessSpec) -> None:
    if len(images) != len(labels) or len(images) < 2:
        raise ValueError(
            f"need at least 2 images with one label each, got {len(images)} images and {len(labels)} labels"
        )
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (spec.image_size, spec.image_size, 3):
        raise ValueError(
            f"images must be uint8 (N, {spec.image_size}, {spec.image_size}, 3) for this spec, got {images.shape}"
        )


def _check_sweep(
    start_lr: float, end_lr: float, num_steps: int, batch_size: int, smooth: float, diverge_factor: float
) -> None:
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    if num_steps < 2 or batch_size < 1 or not 0 < smooth <= 1 or diverge_factor <= 1:
        raise ValueError("need num_steps >= 2, batch_size >= 1, 0 < smooth <= 1 and diverge_factor > 1")


class _SmoothedLoss:
    """The bias-corrected exponential moving average of the loss, and whether it has blown up: above
    `diverge_factor` times the lowest average so far."""

    def __init__(self, smooth: float, diverge_factor: float) -> None:
        self.beta, self.diverge_factor = 1.0 - smooth, diverge_factor
        self.average, self.best, self.steps = 0.0, math.inf, 0

    def add(self, value: float) -> float:
        """Take one batch's loss; the smoothed loss after it."""
        self.average = self.beta * self.average + (1 - self.beta) * value
        self.steps += 1
        smoothed = self.average / (1 - self.beta**self.steps)
        self.best = min(self.best, smoothed)
        return smoothed

    def diverged(self, smoothed: float) -> bool:
        return smoothed > self.diverge_factor * self.best


def _sweep(
    next_loss: Callable[[], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    schedule: list[float],
    smoothed: _SmoothedLoss,
) -> tuple[list[float], list[float], float | None]:
    """One optimiser step at each LR of `schedule`: (the LRs stepped, the smoothed loss at each, the LR
    at which the loss diverged or None). A non-finite loss stops the sweep before its step."""
    lrs: list[float] = []
    losses: list[float] = []
    for lr in progress(schedule, "lr-find", len(schedule), log, unit="steps"):
        loss = next_loss()
        value = float(loss.detach())
        if not math.isfinite(value):
            return lrs, losses, lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        optimizer.step()
        lrs.append(lr)
        losses.append(smoothed.add(value))
        if smoothed.diverged(losses[-1]):
            return lrs, losses, lr
    return lrs, losses, None


def _cycled_batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless full batches from successive shuffles of range(n) (an epoch's remainder is dropped, so
    every step sees `batch_size` distinct rows); sorted so reads from a memory-mapped cache stay
    mostly sequential."""
    while True:
        order = rng.permutation(n)
        for start in range(0, n - batch_size + 1, batch_size):
            yield np.sort(order[start : start + batch_size])


@contextlib.contextmanager
def _restored(model: nn.Module) -> Iterator[None]:
    """Put back every parameter and buffer (a clone keeps values and memory layout), gradients and
    train/eval mode when the block exits, however it exits."""
    saved = {name: t.detach().clone() for name, t in _named_tensors(model)}
    grads = {name: p.grad for name, p in model.named_parameters()}
    was_training = model.training
    try:
        yield
    finally:
        with torch.no_grad():
            for name, tensor in _named_tensors(model):  # looked up again: .to() may have replaced buffers
                tensor.data = saved[name]
            for name, param in model.named_parameters():
                param.grad = grads[name]
        model.train(was_training)


def _named_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from model.named_parameters()
    yield from model.named_buffers()


@contextlib.contextmanager
def _seeded_torch(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's generator on the model's device (dropout, drop-path) for a reproducible sweep,
    and give the caller's random state back afterwards."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def run_lr_find(
    data_dir: str,
    arch: str,
    image_size: int,
    batch_size: int,
    out_png: str,
    pretrained: bool = True,
    num_steps: int = 100,
) -> LRFinderResult:
    """What `imgclf lr-find` runs: any data source -> decoded cache -> fresh `arch` -> sweep -> PNG.

    Unreadable and unlabelled files are skipped with a warning that counts them by reason (the
    finder needs pixels and a label, not the full validation report). Only the train rows of the
    split `imgclf train` makes (a given split is kept; otherwise the default seeded stratified
    split) are swept: the LR is a training choice, and val/test images stay unseen.
    """
    from imgclf.data.cache import decoded_images
    from imgclf.data.prepare import prepare_data
    from imgclf.models.factory import create

    prepared = prepare_data(data_dir)
    if prepared.describe_skipped():
        log.warning("lr-find: %s", prepared.describe_skipped())
    split = prepared.manifest
    manifest = split.subset("train")
    log.info("lr-find: sweeping the %d train images of %d labelled ones", len(manifest), len(split))
    if len(manifest) < 2:
        raise ValueError(
            f"lr-find needs at least 2 usable labelled training images in {data_dir}, found {len(manifest)}"
        )

    class_names = manifest.class_names
    model, mean, std = create(arch, len(class_names), pretrained=pretrained)
    spec = PreprocessSpec(image_size=image_size, mean=mean, std=std)
    images = decoded_images(manifest, spec)
    result = find_lr(
        model, images, manifest.label_indices(class_names), spec, batch_size=batch_size, num_steps=num_steps
    )
    result.plot(out_png)
    return result
