"""Structured pruning: remove whole channels (not masks), so the network really gets smaller and
faster, then fine-tune it briefly with the training loop.

Each channel is scored by the L1 norm of its weights in every layer that shares it (conv filters,
norm scales; averaged), and the lowest-scoring `amount` of each group is removed. Which layers
share a channel (a residual add ties a whole ResNet stage together, a depthwise conv ties its input
to its output, squeeze-excite ties its two convs to the block) is found by tracing the network with
torch-pruning's dependency graph (DepGraph), so timm/torchvision CNNs need no per-architecture code.
Tested on ResNet, EfficientNet-Lite and MobileNetV3 (timm and torchvision). BatchNorm statistics are
then re-estimated on train images, so the pruned network is usable even before fine-tuning.

A pruned bundle is still safetensors + JSON: `TrainedModel.structure` records the attributes that
changed (a conv's in/out channels, a norm's num_features, ...), `apply_structure` re-applies them to
the architecture as built and resizes its tensors to the saved weights. No pickle, no stored code;
`prune_model` checks that the rebuilt network reproduces the pruned one's logits.

This module also holds the figures both compressions report (parameters, MACs, latency, test
accuracy), so pruning and distillation are measured the same way.
"""

from __future__ import annotations

import fnmatch
import functools
import itertools
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from imgclf.augment import AugmentPolicy
from imgclf.bundle import TrainedModel
from imgclf.preprocess import PreprocessSpec
from imgclf.train.config import TrainConfig

if TYPE_CHECKING:
    from torch import nn

    from imgclf.data.manifest import DatasetManifest


class PruneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: float = Field(0.3, gt=0, lt=1, description="fraction of the channels of each prunable layer group removed")
    ignore: list[str] = Field(
        default_factory=list,
        description="module-name patterns (fnmatch, e.g. 'layer4.*') whose output channels are kept; the classifier head always is",
    )
    round_to: int | None = Field(None, ge=2, description="keep channel counts multiples of this (e.g. 8 for SIMD-friendly widths)")
    recalibration_images: int = Field(
        1024, ge=0, description="train images (un-augmented) on which BatchNorm statistics are re-estimated after pruning; 0 = off"
    )
    epochs: int = Field(2, ge=0, description="fine-tune epochs after pruning; 0 = none")
    lr: float = Field(1e-3, gt=0, description="fine-tune learning rate")
    batch_size: int | None = Field(None, ge=1, description="default: the bundle's training batch size")
    seed: int | None = Field(None, description="default: the bundle's training seed")
    num_workers: int | None = Field(None, ge=0)
    latency_repeats: int = Field(50, ge=1, description="batch-1 timed calls per model and round (batch-32: a fifth of that, at least 3)")
    latency_rounds: int = Field(3, ge=1, description="alternating timing rounds; the report keeps the medians")


# -- figures: what every compression reports, before and after --------------------------------------


@dataclass
class ModelFigures:
    params: int
    macs: int  # multiply-accumulates of one image at the model's input size (convs and linears)
    latency_p50_ms: float  # batch 1, preprocessing included
    latency_p95_ms: float
    batch32_images_per_s: float
    test_accuracy: float


def count_params(model: "nn.Module") -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: "nn.Module", image_size: int) -> int:
    """Multiply-accumulates of one forward pass on one image, from forward hooks on every conv and
    linear layer (output elements x weights per output). Elementwise work (norms, activations,
    pooling) is left out, as in the usual MAC counts of CNNs."""
    import torch
    from torch import nn

    total = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        per_output = module.weight[0].numel()  # conv: (in / groups) x kh x kw; linear: in_features
        total += output.numel() // output.shape[0] * per_output

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return total


def accuracy(model: "nn.Module", images: np.ndarray, labels: np.ndarray, spec: PreprocessSpec) -> float:
    from imgclf.train.loop import predict_logits

    if not len(labels):
        raise ValueError("no test images to measure accuracy on: the split has an empty test set")
    return float((predict_logits(model, images, spec).argmax(1) == labels).mean())


def measure_models(
    models: list[tuple["nn.Module", PreprocessSpec]], test_images: np.ndarray, test_labels: np.ndarray,
    latency_repeats: int, rounds: int = 3,
) -> list[ModelFigures]:
    """Figures of each (model, its spec). Latency is timed in `rounds` rounds, each round every model
    in a rotated order, and the medians over rounds are kept: on a shared machine a burst of load
    then lands on all models alike instead of on whichever was timed during it."""
    from statistics import median

    from imgclf.evaluate.latency import interleaved_rounds, measure_model_latency

    models = [(model.eval(), spec) for model, spec in models]
    by_index = interleaved_rounds(
        {str(i): functools.partial(measure_model_latency, model, spec, repeats=latency_repeats) for i, (model, spec) in enumerate(models)}, rounds
    )
    timings = [by_index[str(i)] for i in range(len(models))]
    return [
        ModelFigures(
            params=count_params(model),
            macs=count_macs(model, spec.image_size),
            latency_p50_ms=median(t.p50_ms for t in times),
            latency_p95_ms=median(t.p95_ms for t in times),
            batch32_images_per_s=median(t.batch32_images_per_s for t in times),
            test_accuracy=accuracy(model, test_images, test_labels, spec),
        )
        for (model, spec), times in zip(models, timings)
    ]


def _human(n: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.2f}{suffix}"
    return f"{n:.0f}"


def figures_table(rows: list[tuple[str, ModelFigures]]) -> str:
    """A plain-text table of the rows, then each later row's ratio to the first (accuracy as a
    difference: a ratio of accuracies hides what a point costs)."""
    header = f"{'model':<34} {'params':>9} {'MACs':>9} {'p50 ms':>8} {'b32 img/s':>10} {'test acc':>9}"
    lines = [header, "-" * len(header)]
    for name, f in rows:
        lines.append(
            f"{name:<34} {_human(f.params):>9} {_human(f.macs):>9} {f.latency_p50_ms:>8.2f} {f.batch32_images_per_s:>10.0f} {f.test_accuracy:>9.4f}"
        )
    base_name, base = rows[0]
    lines.append(f"ratio to {base_name} (accuracy: difference)")
    for name, f in rows[1:]:
        lines.append(
            f"{name:<34} {f.params / base.params:>8.2f}x {f.macs / base.macs:>8.2f}x"
            f" {f.latency_p50_ms / base.latency_p50_ms:>7.2f}x {f.batch32_images_per_s / base.batch32_images_per_s:>9.2f}x"
            f" {f.test_accuracy - base.test_accuracy:>+9.4f}"
        )
    return "\n".join(lines)


@dataclass
class SplitImages:
    """A split manifest's images, decoded once at a model's input size, with class indices."""

    train: np.ndarray
    train_labels: np.ndarray
    val: np.ndarray
    val_labels: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray
    data_hash: str

    @classmethod
    def load(cls, split: "DatasetManifest", trained: TrainedModel) -> "SplitImages":
        from imgclf.data.cache import decoded_images

        if split.multi_label or trained.info.get("multi_label"):
            raise ValueError("compression reports single-label accuracy; multi-label data and models are not supported")
        if list(split.class_names) != list(trained.class_names):
            raise ValueError(f"the data's classes {split.class_names} are not the model's {trained.class_names}")
        resize = PreprocessSpec(image_size=trained.preprocess.image_size, resize_mode=trained.preprocess.resize_mode)
        parts = {name: split.subset(name) for name in ("train", "val", "test")}
        for name, part in parts.items():
            if not len(part):
                raise ValueError(f"the split has no {name} images")
        images = {name: decoded_images(part, resize) for name, part in parts.items()}
        labels = {name: part.label_indices(split.class_names) for name, part in parts.items()}
        return cls(
            images["train"], labels["train"], images["val"], labels["val"], images["test"], labels["test"], split.content_hash()
        )


# -- structure: rebuild a pruned network from plain files --------------------------------------------


def _shape_value(value: Any) -> bool:
    """int or tuple/list of ints: the kind of attribute a channel count lives in (bools are flags)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, (tuple, list)) and bool(value) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def structure_of(model: "nn.Module", reference: "nn.Module") -> dict[str, dict[str, Any]]:
    """Per module, the integer attributes of `model` that differ from `reference` (the same
    architecture as built): what `apply_structure` needs, JSON-ready."""
    ref = dict(reference.named_modules())
    structure: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        if name not in ref:
            raise ValueError(f"module {name!r} ({type(module).__name__}) is not in the architecture as built; cannot describe it")
        diff = {
            attr: list(value) if isinstance(value, tuple) else value
            for attr, value in vars(module).items()
            if not attr.startswith("_") and _shape_value(value) and getattr(ref[name], attr, None) != value
        }
        if diff:
            structure[name] = diff
    return structure


def apply_structure(model: "nn.Module", structure: dict[str, dict[str, Any]], state_dict: dict[str, Any]) -> None:
    """Turn `model` (the architecture as built) into the pruned network: set the recorded attributes,
    and give every parameter and buffer the shape of its saved tensor (values come from loading)."""
    import torch
    from torch import nn

    modules = dict(model.named_modules())
    for name, attrs in structure.items():
        if name not in modules:
            raise ValueError(f"the bundle's structure names module {name!r}, which {type(model).__name__} does not have")
        module = modules[name]
        for attr, value in attrs.items():
            if not hasattr(module, attr):
                raise ValueError(f"the bundle's structure sets {name}.{attr}, which {type(module).__name__} does not have")
            setattr(module, attr, tuple(value) if isinstance(getattr(module, attr), tuple) else value)
    for key, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
        saved = state_dict.get(key)
        if saved is None or tuple(saved.shape) == tuple(tensor.shape):
            continue
        owner_name, _, attr = key.rpartition(".")
        owner = model.get_submodule(owner_name)
        empty = torch.empty(tuple(saved.shape), dtype=tensor.dtype)
        setattr(owner, attr, nn.Parameter(empty, requires_grad=tensor.requires_grad) if isinstance(tensor, nn.Parameter) else empty)


# -- pruning ----------------------------------------------------------------------------------------


def _ignored_modules(model: "nn.Module", patterns: list[str], arch: str) -> list["nn.Module"]:
    """The head's modules plus every module matching a pattern; a pattern matching nothing is an error."""
    from imgclf.models import head_parameters

    head = {id(p) for p in head_parameters(model)}
    ignored = [m for m in model.modules() if any(id(p) in head for p in m.parameters(recurse=False))]
    names = [name for name, _ in model.named_modules() if name]
    for pattern in patterns:
        matched = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            raise ValueError(f"ignore pattern {pattern!r} matches no module of {arch} (module names look like {names[0]!r}, {names[-1]!r})")
        ignored.extend(model.get_submodule(name) for name in matched)
    return ignored


def recalibrate_batchnorm(model: "nn.Module", images: np.ndarray, spec: PreprocessSpec, count: int, batch_size: int = 64, seed: int = 0) -> None:
    """Re-estimate every BatchNorm's running statistics on `count` random images, weights untouched.

    Removing channels shifts the inputs of every later layer, so the stored statistics no longer fit
    and a pruned network can fall to chance before any fine-tuning (a 3-epoch resnet10t on 300 digits,
    10% pruned: 0.975 -> 0.10 test accuracy; re-estimated: 0.95). Random images, because batches of
    one class would understate the variance. A fine-tune does not need it (training normalises with
    each batch's own statistics); pruning without one (epochs 0) does."""
    import torch
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or not count:
        return
    chosen = np.random.default_rng(seed).permutation(len(images))[:count]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over all batches
    model.train()
    try:
        with torch.no_grad():
            for start in range(0, len(chosen), batch_size):
                rows = chosen[start : start + batch_size]
                if len(rows) > 1:  # a batch of 1 has no variance
                    model(spec.normalize(torch.from_numpy(np.asarray(images[rows])).permute(0, 3, 1, 2)))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()


def prune_model(trained: TrainedModel, config: PruneConfig, calibration_images: np.ndarray | None = None) -> TrainedModel:
    """The bundle with the lowest-L1 `amount` of channels removed (no fine-tuning), its BatchNorm
    statistics re-estimated on `calibration_images` (uint8, N x H x W x 3) when given.

    Works on an already pruned bundle too (pruning again removes `amount` of what is left)."""
    import torch
    import torch_pruning as tp

    from imgclf.models import create

    model = trained.build()
    size = trained.preprocess.image_size
    ignored = _ignored_modules(model, config.ignore, trained.arch)
    params_before = count_params(model)
    try:
        pruner = tp.pruner.BasePruner(
            model, torch.zeros(1, 3, size, size), importance=tp.importance.GroupMagnitudeImportance(p=1),
            pruning_ratio=config.amount, ignored_layers=ignored, round_to=config.round_to,
        )
        pruner.step()
    except Exception as exc:  # tracing or pruning failed inside torch-pruning
        raise RuntimeError(f"cannot prune {trained.arch}: torch-pruning failed ({type(exc).__name__}: {exc})") from exc
    model.eval()
    if calibration_images is not None:
        recalibrate_batchnorm(model, calibration_images, trained.preprocess, config.recalibration_images)
    reference, _, _ = create(trained.arch, len(trained.class_names), pretrained=False, image_size=size)
    pruned = TrainedModel(
        arch=trained.arch,
        class_names=list(trained.class_names),
        preprocess=trained.preprocess,
        state_dict={k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()},
        history=[],
        info={
            **trained.info,
            "pruned": [*trained.info.get("pruned", []), {"amount": config.amount, "ignore": config.ignore, "round_to": config.round_to,
                                                          "params_before": params_before, "params_after": count_params(model)}],
        },
        structure=structure_of(model, reference),
    )
    _check_rebuild(model, pruned)
    return pruned


def _check_rebuild(model: "nn.Module", pruned: TrainedModel) -> None:
    """The bundle must rebuild the very network that was pruned: same logits on random input."""
    import torch

    size = pruned.preprocess.image_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        diff = float((model(x) - pruned.build()(x)).abs().max())
    if not diff <= 1e-4:
        raise RuntimeError(
            f"the pruned {pruned.arch} cannot be rebuilt from its bundle (largest logit difference {diff:.3g}): "
            "the architecture keeps a channel count where the structure record does not see it"
        )


@dataclass
class PruneReport:
    arch: str
    amount: float
    finetune_epochs: int
    before: ModelFigures
    after: ModelFigures  # after fine-tuning
    accuracy_pruned_not_finetuned: float
    batchnorm_recalibrated: bool  # before that accuracy was measured
    data_matches_training: bool | None  # the data's hash equals the bundle's (None: the bundle has none)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        after = f"pruned {self.amount:.0%}" + (f", fine-tuned {self.finetune_epochs} ep" if self.finetune_epochs else "")
        text = figures_table([(f"{self.arch} (before)", self.before), (after, self.after)])
        how = " (BatchNorm statistics re-estimated)" if self.batchnorm_recalibrated else ""
        return text + f"\ntest accuracy right after pruning{how}, before fine-tuning: {self.accuracy_pruned_not_finetuned:.4f}"


def _finetune_config(trained: TrainedModel, config: PruneConfig) -> TrainConfig:
    """The bundle's own training settings, but full training from its weights for `config.epochs` at
    `config.lr`, without early stopping or EMA (over a short fine-tune an EMA lags behind)."""
    base = {k: v for k, v in trained.info.get("train_config", {}).items() if k in TrainConfig.model_fields}
    base.update(
        arch=trained.arch, pretrained=False, weights_file=None, transfer="full", image_size=trained.preprocess.image_size,
        resize_mode=trained.preprocess.resize_mode, epochs=config.epochs, lr=config.lr, early_stopping_patience=None, ema_decay=None,
    )
    base.update({k: v for k, v in {"batch_size": config.batch_size, "seed": config.seed, "num_workers": config.num_workers}.items() if v is not None})
    return TrainConfig(**base)


def prune_and_finetune(
    trained: TrainedModel, split: "DatasetManifest", config: PruneConfig, policy: AugmentPolicy = AugmentPolicy()
) -> tuple[TrainedModel, PruneReport]:
    """Prune, fine-tune on the split's train rows (selecting on val), and measure both networks on
    its test rows. Give the split the model was trained with, or test images may have been seen."""
    from imgclf.train.loop import fit

    data = SplitImages.load(split, trained)
    spec = trained.preprocess
    pruned = prune_model(trained, config, calibration_images=data.train)
    accuracy_pruned = accuracy(pruned.build(), data.test, data.test_labels, spec)
    result = pruned
    if config.epochs:
        result = fit(
            data.train, data.train_labels, data.val, data.val_labels, list(trained.class_names),
            _finetune_config(trained, config), policy, initial=pruned,
        )
        # keep what earlier compressions (a distillation) reported: the shipped model's history
        result.info.update({k: v for k, v in trained.info.items() if k.endswith("_report")})
        result.info.update(pruned=pruned.info["pruned"], data_hash=data.data_hash)
    before, after = measure_models(
        [(trained.build(), spec), (result.build(), spec)], data.test, data.test_labels, config.latency_repeats, config.latency_rounds
    )
    trained_on = trained.info.get("data_hash")
    report = PruneReport(
        arch=trained.arch, amount=config.amount, finetune_epochs=config.epochs, before=before, after=after,
        accuracy_pruned_not_finetuned=accuracy_pruned, batchnorm_recalibrated=config.recalibration_images > 0,
        data_matches_training=None if trained_on is None else trained_on == data.data_hash,
    )
    result.info["prune_report"] = report.to_dict()
    return result, report


def compression_metadata(info: dict[str, Any]) -> dict[str, float]:
    """A bundle's distillation and pruning before/after numbers, flat (step metadata, dashboards)."""
    out: dict[str, float] = {}
    if "distill_report" in info:
        r = info["distill_report"]
        out.update(distill_teacher_test_accuracy=r["teacher"]["test_accuracy"], distill_student_test_accuracy=r["student_distilled"]["test_accuracy"])
        if r["student_alone"]:
            out["distill_student_alone_test_accuracy"] = r["student_alone"]["test_accuracy"]
    if "prune_report" in info:
        r = info["prune_report"]
        for key in ("params", "macs", "test_accuracy"):
            out[f"prune_{key}_before"], out[f"prune_{key}_after"] = r["before"][key], r["after"][key]
    return out
