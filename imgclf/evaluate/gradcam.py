"""Grad-CAM: which pixels made the model say what it said.

`grad_cam` takes uint8 images exactly as `predict_logits` does (N, H, W, 3, preprocessed by the
model's own `PreprocessSpec`) and returns one heatmap per image, (N, H, W) in [0, 1], for the predicted
class or for the classes asked for. The layer it explains is found automatically: the last module that
produces a 4-D feature map before the model's global pooling (`layer4` of a ResNet, `bn2` of an
EfficientNet, `blocks` of a timm MobileNetV3, `conv5` of a ShuffleNet). Models that have no such map
(ViT, DeiT: tokens, not a grid) get an error that says so.

The model is only read: it runs in eval mode (restored afterwards), gradients are taken with
`torch.autograd.grad` with respect to the feature map alone (no parameter's `.grad` is touched), and
every hook is removed before returning, also when something fails.

`overlay` blends a heatmap onto its image with a matplotlib colormap (no pyplot).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from imgclf.inference import model_input
from imgclf.preprocess import PreprocessSpec

_POOL_NAME = re.compile(r"(Adaptive|Global).*Pool|Pool.*(Adaptive|Global)", re.IGNORECASE)


class GradCamUnsupported(ValueError):
    """The model has no 4-D feature map that Grad-CAM could explain (a ViT, say), or the layer given is not one."""


def model_label(model: nn.Module) -> str:
    """`VisionTransformer (vit_tiny_patch16_224)` for a timm model, the class name otherwise."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch = cfg.get("architecture") if isinstance(cfg, dict) else None
    return f"{type(model).__name__} ({arch})" if arch else type(model).__name__


@contextmanager
def _hooks(handles: list) -> Iterator[list]:
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


def _first_tensor(value) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _is_global_pool(module: nn.Module, x: torch.Tensor, out: torch.Tensor | None = None) -> bool:
    """A module that turns a 4-D map into one value per channel (by its type or by what it did)."""
    if x.ndim != 4:
        return False
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) or _POOL_NAME.search(type(module).__name__):
        return True
    if out is not None and x.shape[-2:].numel() > 1 and next(module.parameters(), None) is None:
        return out.ndim == 2 or (out.ndim == 4 and out.shape[-2:].numel() == 1)  # a functional-style pool
    return False


def _probe(
    model: nn.Module, x: torch.Tensor
) -> list[tuple[str, str, nn.Module, torch.Tensor | None, torch.Tensor | None]]:
    """One forward pass with every module watched: (event, name, module, input, output) in call order;
    event is "enter" (pre-hook) or "exit" (forward hook)."""
    events: list = []
    handles = []
    for name, module in model.named_modules():

        def pre(mod, args, name=name):
            events.append(("enter", name, mod, _first_tensor(args), None))

        def post(mod, args, out, name=name):
            events.append(("exit", name, mod, _first_tensor(args), _first_tensor(out)))

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    with _hooks(handles), torch.no_grad():
        model(x)
    return events


def find_target_layer(model: nn.Module, image_size: int = 64) -> str:
    """The name of the layer Grad-CAM explains by default: the last module whose output is a 4-D
    feature map before the model's global pooling (the last pooling module of the forward pass, so
    squeeze-excitation pools inside blocks are passed over; a model that pools functionally, like
    torchvision's ShuffleNet, stops at the first module that is fed something other than a 4-D map).
    Raises `GradCamUnsupported` for models that work on token sequences (ViT/DeiT) and so have no
    feature map to explain. One probing forward pass of a blank image, in eval mode, hooks removed."""
    device = next(model.parameters()).device
    x = torch.zeros(1, 3, image_size, image_size, device=device)
    with _eval_mode(model):
        events = _probe(model, x)
    # the *last* global pool is the head's: squeeze-excitation blocks pool too, and come before it
    pools = [
        i
        for i, (kind, name, mod, inp, out) in enumerate(events)
        if kind == "exit" and name and inp is not None and _is_global_pool(mod, inp, out)
    ]
    stop = pools[-1] if pools else None
    if stop is not None:  # stop where the pool was entered, not where it finished
        pool_name = events[stop][1]
        stop = max(i for i, e in enumerate(events[:stop]) if e[0] == "enter" and e[1] == pool_name)
    else:
        stop = next(
            (
                i
                for i, (kind, name, _, inp, _) in enumerate(events)
                if kind == "enter" and name and inp is not None and inp.ndim != 4
            ),
            len(events),
        )
    tokens_after = [
        name for kind, name, _, inp, _ in events[stop:] if kind == "enter" and inp is not None and inp.ndim == 3
    ]
    candidates = [
        name
        for kind, name, mod, _, out in events[:stop]
        if kind == "exit" and name and out is not None and out.ndim == 4 and not isinstance(mod, nn.Identity)
    ]
    if tokens_after or not candidates:
        why = (
            f"its layers after {candidates[-1] if candidates else 'the input'} work on token sequences"
            if tokens_after
            else "no layer produces a 4-D feature map"
        )
        raise GradCamUnsupported(
            f"Grad-CAM needs a convolutional feature map (N, C, H, W) before global pooling; model "
            f"{model_label(model)} has none ({why}, e.g. a ViT/DeiT). Pass target_layer= to pick one by hand."
        )
    return candidates[-1]


def _resolve_layer(model: nn.Module, target_layer: str | nn.Module | None, image_size: int) -> tuple[str, nn.Module]:
    if target_layer is None:
        name = find_target_layer(model, image_size)
        return name, model.get_submodule(name)
    if isinstance(target_layer, str):
        try:
            return target_layer, model.get_submodule(target_layer)
        except AttributeError:
            raise GradCamUnsupported(f"model {model_label(model)} has no layer named {target_layer!r}") from None
    for name, module in model.named_modules():
        if module is target_layer:
            return name, module
    raise GradCamUnsupported(
        f"the target layer {type(target_layer).__name__} is not part of model {model_label(model)}"
    )


def _channels_first(act: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """timm models that keep NHWC maps (Swin, some hybrids) are turned to NCHW by their feature count."""
    features = getattr(model, "num_features", None)
    if isinstance(features, int) and act.shape[1] != features and act.shape[-1] == features:
        return act.permute(0, 3, 1, 2)
    return act


def grad_cam(
    model: nn.Module,
    images_uint8_nhwc: np.ndarray,
    spec: PreprocessSpec,
    class_indices: int | Sequence[int] | np.ndarray | None = None,
    target_layer: str | nn.Module | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Grad-CAM heatmaps (N, H, W), float32 in [0, 1], at the images' resolution.

    `images_uint8_nhwc`: uint8 (N, H, W, 3), already resized by `spec` (the decoded cache), normalised
    here by `spec` exactly as `predict_logits` does. `class_indices`: one class for all images, one per
    image, or None for each image's predicted class. `target_layer`: a module of `model` or its name;
    None finds it (`find_target_layer`). An image whose map has no positive evidence gets all zeros.
    """
    images = np.asarray(images_uint8_nhwc)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"grad_cam expects uint8 images (N, H, W, 3), got shape {images.shape}")
    n, height, width = images.shape[:3]
    if n == 0:
        return np.zeros((0, height, width), dtype=np.float32)
    if class_indices is not None:
        classes = np.broadcast_to(np.asarray(class_indices, dtype=np.int64), (n,)).copy()
    device = next(model.parameters()).device
    name, layer = _resolve_layer(model, target_layer, spec.image_size)
    captured: list[torch.Tensor] = []

    def keep(module, args, out):
        tensor = _first_tensor(out)
        captured.append(tensor)

    heatmaps = []
    with _eval_mode(model), _hooks([layer.register_forward_hook(keep)]), torch.enable_grad():
        for start in range(0, n, batch_size):
            captured.clear()
            # requires_grad: the map needs a gradient even when every weight is frozen
            x = model_input(images[start : start + batch_size], spec, device).contiguous().requires_grad_(True)
            logits = model(x)
            if not captured or captured[-1] is None or captured[-1].ndim != 4:
                got = "nothing" if not captured or captured[-1] is None else f"shape {tuple(captured[-1].shape)}"
                raise GradCamUnsupported(
                    f"layer {name!r} of model {model_label(model)} gave {got}, not a 4-D feature map"
                )
            act = captured[-1]  # the last call wins when a module is used twice
            if logits.ndim != 2:
                raise GradCamUnsupported(
                    f"model {model_label(model)} returned logits of shape {tuple(logits.shape)}, not (N, classes)"
                )
            wanted = None if class_indices is None else classes[start : start + len(x)]
            score = logits.gather(1, _batch_classes(logits, wanted).view(-1, 1)).sum()  # eval mode: images independent
            (grad,) = torch.autograd.grad(score, act)
            heatmaps.append(_normalised_cam(act, grad, model, (height, width)))
    return np.concatenate(heatmaps)


def _batch_classes(logits: torch.Tensor, wanted: np.ndarray | None) -> torch.Tensor:
    """The class each image's map explains: the one asked for, else the predicted one."""
    if wanted is None:
        return logits.argmax(1)
    chosen = torch.from_numpy(np.ascontiguousarray(wanted)).to(logits.device)
    if int(chosen.max()) >= logits.shape[1] or int(chosen.min()) < 0:
        raise ValueError(f"class index out of range for {logits.shape[1]} classes")
    return chosen


def _normalised_cam(act: torch.Tensor, grad: torch.Tensor, model: nn.Module, size: tuple[int, int]) -> np.ndarray:
    """ReLU of the gradient-weighted channel sum, at the images' size, scaled so each map peaks at 1."""
    act, grad = _channels_first(act.detach().float(), model), _channels_first(grad.float(), model)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * act).sum(dim=1, keepdim=True))
    cam = nn.functional.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).view(-1, 1, 1)
    cam = torch.where(peak > 0, cam / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(cam))
    return cam.clamp(0, 1).cpu().numpy().astype(np.float32)


def overlay(image_uint8_hwc: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """The image with `heatmap` (values in [0, 1]) blended on top in `colormap`: uint8 (H, W, 3).

    A heatmap of another size is resized to the image; a grey (H, W) or (H, W, 1) image becomes RGB."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    from matplotlib import colormaps
    from PIL import Image

    image = np.asarray(image_uint8_hwc)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"overlay expects an image (H, W, 3), got shape {image.shape}")
    image = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    heat = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0)
    if heat.ndim != 2:
        raise ValueError(f"overlay expects a heatmap (H, W), got shape {heat.shape}")
    if heat.shape != image.shape[:2]:
        heat = np.asarray(Image.fromarray(heat, mode="F").resize((image.shape[1], image.shape[0]), Image.BILINEAR))
    colour = colormaps[colormap](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colour
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
