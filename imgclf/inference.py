"""Running a torch model on decoded images: the one conversion from cached uint8 pixels to the
model's input, and logits in batches. Evaluation, export, compression, Grad-CAM and the LR finder
import this; none of them needs the training loop for it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from imgclf.models.features import logits_and_features
from imgclf.preprocess import PreprocessSpec


def model_input(
    images: np.ndarray, spec: PreprocessSpec, device: torch.device | str | None = None, channels_last: bool = False
) -> torch.Tensor:
    """uint8 images (N, H, W, 3), e.g. rows of the memory-mapped cache -> the normalised float input
    (N, 3, H, W) on `device`; normalising after the copy to the device keeps the transfer uint8."""
    x = torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2)
    if device is not None:
        x = x.to(device, non_blocking=True)
    x = spec.normalize(x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def predict_logits(
    model: nn.Module, images: np.ndarray, spec: PreprocessSpec, batch_size: int = 128, channels_last: bool = True
) -> np.ndarray:
    """Logits (N, C) for uint8 images (N, H, W, 3), preprocessed by `spec`, on the model's device.

    The memory-format change happens outside inference mode: inside it, the module's parameters would
    become inference tensors, and a later autograd pass (Grad-CAM) on the same module would fail."""
    return _batched(lambda x: (model(x),), model, images, spec, batch_size, channels_last)[0]


def predict_logits_and_features(
    model: nn.Module, images: np.ndarray, spec: PreprocessSpec, batch_size: int = 128, channels_last: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, C) and pooled pre-logits features (N, F) of uint8 images, as `predict_logits`
    (`imgclf.models.features.logits_and_features`: what the embedding projection is fitted on)."""
    logits, features = _batched(lambda x: logits_and_features(model, x), model, images, spec, batch_size, channels_last)
    return logits, features


def _batched(
    forward: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
    model: nn.Module,
    images: np.ndarray,
    spec: PreprocessSpec,
    batch_size: int,
    channels_last: bool,
) -> list[np.ndarray]:
    """`forward`'s outputs on `images` in batches, each concatenated over the batches (float32 numpy)."""
    model.eval()
    device = next(model.parameters()).device
    if channels_last:
        model.to(memory_format=torch.channels_last)
    outs: list[tuple[np.ndarray, ...]] = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = model_input(images[start : start + batch_size], spec, device, channels_last)
            outs.append(tuple(y.float().cpu().numpy() for y in forward(x)))
    if not outs:
        return [np.zeros((0, 0), dtype=np.float32)] * 2
    return [np.concatenate(parts) for parts in zip(*outs)]
