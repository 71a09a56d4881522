"""What every compression reports, before and after: parameters, MACs, latency and test accuracy,
measured the same way for pruning and distillation."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from imgclf.data.decoded import DecodedSplits
from imgclf.data.manifest import DatasetManifest
from imgclf.inference import predict_logits
from imgclf.latency import interleaved_rounds, measure_model_latency
from imgclf.models.trained import TrainedModel
from imgclf.preprocess import PreprocessSpec


@dataclass
class ModelFigures:
    params: int
    macs: int  # multiply-accumulates of one image at the model's input size (convs and linears)
    latency_p50_ms: float  # batch 1, preprocessing included
    latency_p95_ms: float
    batch32_images_per_s: float
    test_accuracy: float


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, image_size: int) -> int:
    """Multiply-accumulates of one forward pass on one image, from forward hooks on every conv and
    linear layer (output elements x weights per output). Elementwise work (norms, activations,
    pooling) is left out, as in the usual MAC counts of CNNs."""
    total = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        per_output = module.weight[0].numel()  # conv: (in / groups) x kh x kw; linear: in_features
        total += output.numel() // output.shape[0] * per_output

    hooks = [
        m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
    ]
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


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, spec: PreprocessSpec) -> float:
    if not len(labels):
        raise ValueError("no test images to measure accuracy on: the split has an empty test set")
    return float((predict_logits(model, images, spec).argmax(1) == labels).mean())


def measure_models(
    models: list[tuple[nn.Module, PreprocessSpec]],
    test_images: np.ndarray,
    test_labels: np.ndarray,
    latency_repeats: int,
    rounds: int = 3,
) -> list[ModelFigures]:
    """Figures of each (model, its spec). Latency is timed in `rounds` rounds, each round every model
    in a rotated order, and the medians over rounds are kept: on a shared machine a burst of load
    then lands on all models alike instead of on whichever was timed during it."""
    from statistics import median

    models = [(model.eval(), spec) for model, spec in models]
    by_index = interleaved_rounds(
        {
            str(i): functools.partial(measure_model_latency, model, spec, repeats=latency_repeats)
            for i, (model, spec) in enumerate(models)
        },
        rounds,
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
            f"{name:<34} {_human(f.params):>9} {_human(f.macs):>9} {f.latency_p50_ms:>8.2f} "
            f"{f.batch32_images_per_s:>10.0f} {f.test_accuracy:>9.4f}"
        )
    base_name, base = rows[0]
    lines.append(f"ratio to {base_name} (accuracy: difference)")
    for name, f in rows[1:]:
        lines.append(
            f"{name:<34} {f.params / base.params:>8.2f}x {f.macs / base.macs:>8.2f}x"
            f" {f.latency_p50_ms / base.latency_p50_ms:>7.2f}x"
            f" {f.batch32_images_per_s / base.batch32_images_per_s:>9.2f}x"
            f" {f.test_accuracy - base.test_accuracy:>+9.4f}"
        )
    return "\n".join(lines)


def compression_metadata(info: dict[str, Any]) -> dict[str, float]:
    """A bundle's distillation and pruning before/after numbers, flat (step metadata, dashboards)."""
    out: dict[str, float] = {}
    if "distill_report" in info:
        r = info["distill_report"]
        out.update(
            distill_teacher_test_accuracy=r["teacher"]["test_accuracy"],
            distill_student_test_accuracy=r["student_distilled"]["test_accuracy"],
        )
        if r["student_alone"]:
            out["distill_student_alone_test_accuracy"] = r["student_alone"]["test_accuracy"]
    if "prune_report" in info:
        r = info["prune_report"]
        for key in ("params", "macs", "test_accuracy"):
            out[f"prune_{key}_before"], out[f"prune_{key}_after"] = r["before"][key], r["after"][key]
    return out


def compression_data(split: DatasetManifest, trained: TrainedModel) -> DecodedSplits:
    """The split decoded at the model's input size, checked for what a compression needs: single-label
    data with the model's classes, and images in every split (fine-tune on train, select on val,
    report on test)."""
    if split.multi_label or trained.info.get("multi_label"):
        raise ValueError("compression reports single-label accuracy; multi-label data and models are not supported")
    if list(split.class_names) != list(trained.class_names):
        raise ValueError(f"the data's classes {split.class_names} are not the model's {trained.class_names}")
    data = DecodedSplits(split, trained.preprocess, trained.class_names)
    data.require("train", "val", "test")
    return data
