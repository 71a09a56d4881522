"""Running a torch model on decoded images: the one conversion from cached uint8 pixels to the
model's input, and logits in batches. Evaluation, export, compression, Grad-CAM and the LR finder
import this; none of them needs the training loop for it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

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
    model.eval()
    device = next(model.parameters()).device
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    outs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = model_input(images[start : start + batch_size], spec, device, channels_last)
            outs.append(model(x).float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0), dtype=np.float32)
