"""The checked export the pipeline ships: fp32 ONNX that must reproduce torch, and the INT8 recipe
search that decides whether an INT8 model is served. `imgclf export` adds the other formats
(`imgclf.export.folder`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from imgclf.bundle import ONNX_EMBEDDING, ONNX_FILE, ONNX_INT8_FILE, ONNX_OUTPUT
from imgclf.data.decoded import DecodedSplits
from imgclf.export.int8_report import Int8SearchReport
from imgclf.export.int8_search import Int8Search, Measure, decisions, matches, search_int8
from imgclf.export.onnx import Parity, export_onnx, onnx_logits, onnx_outputs, parity
from imgclf.export.quantize import DEFAULT_CANDIDATES, Int8Recipe
from imgclf.inference import predict_logits, predict_logits_and_features
from imgclf.models.trained import TrainedModel


class ExportConfig(BaseModel):
    """How the exports are checked and how the INT8 recipe is chosen (quantize step and `imgclf export`)."""

    model_config = ConfigDict(extra="forbid")

    tolerance: float = Field(
        0.01, ge=0, le=1, description="largest accuracy drop (fraction) an INT8 recipe may have vs fp32"
    )
    min_agreement: float = Field(
        0.99, ge=0, le=1, description="smallest share of images on which an INT8 recipe must agree with fp32 on top-1"
    )
    min_speedup: float = Field(
        1.05, gt=0, description="an INT8 recipe must be at least this much faster than ORT fp32 at batch 32"
    )
    candidates: list[Int8Recipe] | None = Field(None, description="INT8 recipes to try; null: the default list")
    rounds: int = Field(3, ge=1, description="interleaved timing rounds; speedups are medians over them")
    max_abs_logit_diff: float = Field(
        1e-3, gt=0, description="an fp32 export (ONNX, TorchScript, OpenVINO) further than this from torch fails"
    )
    max_abs_embedding_diff: float = Field(
        1e-3, gt=0, description="an fp32 ONNX whose embedding output is further than this from torch's fails"
    )


# Calibrating on fewer images flipped more predictions against fp32 (digits, 64 px); at larger sizes
# each image carries more activation statistics and costs more to calibrate on, so the sample holds a
# fixed number of pixels (README: INT8 calibration sample).
CALIBRATION_PIXELS = 2048 * 64 * 64
MIN_CALIBRATION_IMAGES = 256


def calibration_sample_size(image_size: int) -> int:
    """How many training images calibrate INT8 at `image_size`: a fixed pixel budget, at least a floor."""
    return max(MIN_CALIBRATION_IMAGES, CALIBRATION_PIXELS // image_size**2)


def calibration_sample(images: np.ndarray, size: int | None = None, seed: int = 0) -> np.ndarray:
    """A seeded sample of training images to calibrate INT8 with (`calibration_sample_size` of them by
    default): every class shows up (the cache is in manifest order, often class by class), and the
    val split stays free to choose the recipe on."""
    size = size or calibration_sample_size(images.shape[1])
    if len(images) <= size:
        return np.asarray(images)
    return np.asarray(images[np.sort(np.random.default_rng(seed).choice(len(images), size, replace=False))])


class ExportMismatch(RuntimeError):
    """An fp32 export does not reproduce torch on the eval images."""


def check_parity(name: str, result: Parity, config: ExportConfig, images: int) -> None:
    """Fail (ExportMismatch) when the fp32 export `name` is further from torch than the config allows,
    on the logits or (when it has one) on the embedding output."""
    if result.max_abs_logit_diff > config.max_abs_logit_diff or result.top1_agreement < 1.0:
        raise ExportMismatch(
            f"{name} disagrees with torch on {images} eval images: max |logit diff| {result.max_abs_logit_diff:.2e} "
            f"(limit {config.max_abs_logit_diff:.0e}), top-1 agreement {result.top1_agreement:.4f} (needs 1.0)"
        )
    embedding = result.max_abs_embedding_diff
    if embedding is not None and not embedding <= config.max_abs_embedding_diff:
        raise ExportMismatch(
            f"{name}'s embedding output disagrees with torch on {images} eval images: max |diff| {embedding:.2e} "
            f"(limit {config.max_abs_embedding_diff:.0e})"
        )


def _only_when_known() -> Any:
    """A figure some exports lack (no INT8 chosen, no held-out split): None, and then absent from the JSON."""
    return field(default=None, metadata={"omit_none": True})


@dataclass(kw_only=True)
class ExportReport:
    """export_report.json of the checked export: fp32 parity, the INT8 choice (its figures on the eval
    split and, with a held-out split, there too) and the whole recipe search."""

    eval_images: int
    torch_accuracy: float
    onnx_max_abs_logit_diff: float
    onnx_top1_agreement: float
    serve: Literal["int8", "fp32"]
    int8_recipe: str | None  # None: fp32 is served
    int8_summary: str
    # the fp32 ONNX's `embedding` output against torch's pooled features projected (models with one)
    onnx_max_abs_embedding_diff: float | None = _only_when_known()
    # the chosen recipe, on the eval split
    int8_accuracy: float | None = _only_when_known()
    int8_accuracy_drop: float | None = _only_when_known()
    int8_top1_agreement: float | None = _only_when_known()
    int8_speedup: float | None = _only_when_known()
    # the held-out (test) split, which played no part in the choice
    test_images: int | None = _only_when_known()
    test_torch_accuracy: float | None = _only_when_known()
    test_onnx_max_abs_logit_diff: float | None = _only_when_known()
    test_onnx_top1_agreement: float | None = _only_when_known()
    test_onnx_max_abs_embedding_diff: float | None = _only_when_known()
    test_int8_top1_agreement: float | None = _only_when_known()  # with torch
    test_int8_accuracy: float | None = _only_when_known()
    test_int8_accuracy_drop: float | None = _only_when_known()  # vs torch
    int8_search: Int8SearchReport

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without the figures this export does not have."""
        omit = {f.name for f in fields(self) if f.metadata.get("omit_none")}
        return {key: value for key, value in asdict(self).items() if value is not None or key not in omit}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportReport:
        return TypeAdapter(cls).validate_python(data)

    def scalars(self) -> dict[str, int | float | str]:
        """The flat numbers and words (step metadata, dashboards)."""
        return {key: value for key, value in self.to_dict().items() if isinstance(value, (int, float, str))}


@dataclass
class ExportedModel:
    onnx: bytes
    onnx_int8: bytes | None  # the chosen INT8 recipe's model; None when no recipe beat fp32
    report: ExportReport

    @property
    def serving_file(self) -> str:
        """The file the service loads: INT8 only when a recipe was chosen (faster and accurate enough)."""
        return ONNX_FILE if self.onnx_int8 is None else ONNX_INT8_FILE


@dataclass(frozen=True)
class ExportImages:
    """What an export is checked on: a calibration sample of training images, the labelled images that
    choose the INT8 recipe and check every fp32 format, and optionally a held-out split on which
    parity is reported untouched by that choice. uint8 (N, H, W, 3) at the model's spec."""

    calibration: np.ndarray
    eval_images: np.ndarray
    eval_labels: np.ndarray
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None

    @classmethod
    def from_splits(cls, data: DecodedSplits) -> ExportImages:
        """A sample of train calibrates, val chooses and checks, test reports."""
        return cls(
            calibration_sample(data.train.images),
            data.val.images,
            data.val.targets,
            data.test.images,
            data.test.targets,
        )


def export_checked(
    trained: TrainedModel, images: ExportImages, config: ExportConfig = ExportConfig(), measure: Measure | None = None
) -> tuple[ExportedModel, Int8Search]:
    """fp32 ONNX checked against torch, then the INT8 search (calibrated on `images.calibration`,
    chosen on the labelled `images.eval_images`). With test images, parity and the chosen INT8's
    agreement and accuracy drop are also reported on that held-out split, which played no part in the
    choice. The ExportedModel holds INT8 only when a recipe won."""
    spec = trained.preprocess
    calibration_images, eval_images, eval_labels = images.calibration, images.eval_images, images.eval_labels
    test_images, test_labels = images.test_images, images.test_labels
    fp32 = export_onnx(trained)
    network = trained.build()
    _, onnx_parity, torch_accuracy = _checked_fp32(
        trained, network, fp32, eval_images, np.asarray(eval_labels), config, ONNX_FILE
    )
    search = search_int8(
        fp32,
        calibration_images,
        eval_images,
        eval_labels,
        spec,
        tolerance=config.tolerance,
        min_agreement=config.min_agreement,
        min_speedup=config.min_speedup,
        candidates=tuple(config.candidates) if config.candidates is not None else DEFAULT_CANDIDATES,
        measure=measure,
        rounds=config.rounds,
    )
    report = ExportReport(
        eval_images=len(eval_images),
        torch_accuracy=torch_accuracy,
        onnx_max_abs_logit_diff=onnx_parity.max_abs_logit_diff,
        onnx_top1_agreement=onnx_parity.top1_agreement,
        onnx_max_abs_embedding_diff=onnx_parity.max_abs_embedding_diff,
        serve=search.serve,
        int8_recipe=search.chosen,
        int8_summary=search.summary(),
        int8_search=search.report(),
    )
    chosen = search.chosen_trial
    if chosen is not None:
        report.int8_accuracy, report.int8_accuracy_drop = chosen.accuracy, chosen.accuracy_drop
        report.int8_top1_agreement, report.int8_speedup = chosen.agreement, chosen.speedup
    if test_images is not None and test_labels is not None:
        _held_out(report, trained, network, fp32, search, test_images, np.asarray(test_labels), config)
    return ExportedModel(onnx=fp32, onnx_int8=search.chosen_model, report=report), search


def _checked_fp32(
    trained: TrainedModel,
    network,
    fp32: bytes,
    images: np.ndarray,
    labels: np.ndarray,
    config: ExportConfig,
    name: str,
) -> tuple[np.ndarray, Parity, float]:
    """Torch logits on `images`, the fp32 ONNX's parity with them and, for a model with a projection,
    of its embedding output with torch's pooled features projected (fails past the limits, naming
    `name`), and torch's accuracy on `labels`."""
    spec, projection = trained.preprocess, trained.projection
    if projection is None:
        reference = predict_logits(network, images, spec)
        fp32_parity = parity(reference, onnx_logits(fp32, images, spec))
    else:
        reference, pooled = predict_logits_and_features(network, images, spec)
        logits, embedding = onnx_outputs(fp32, images, spec, [ONNX_OUTPUT, ONNX_EMBEDDING])
        fp32_parity = parity(reference, logits, projection.apply(pooled), embedding)
    check_parity(name, fp32_parity, config, len(images))
    return reference, fp32_parity, float(matches(decisions(reference, labels), labels).mean())


def _held_out(
    report: ExportReport,
    trained: TrainedModel,
    network,
    fp32: bytes,
    search: Int8Search,
    images: np.ndarray,
    labels: np.ndarray,
    config: ExportConfig,
) -> None:
    """Fill in the `test_*` figures: fp32 ONNX parity with torch (checked) and the chosen INT8's top-1
    agreement and accuracy drop, on images the recipe choice never saw."""
    spec = trained.preprocess
    reference, fp32_parity, torch_accuracy = _checked_fp32(
        trained, network, fp32, images, labels, config, f"{ONNX_FILE} (test split)"
    )
    report.test_images, report.test_torch_accuracy = len(images), torch_accuracy
    report.test_onnx_max_abs_logit_diff = fp32_parity.max_abs_logit_diff
    report.test_onnx_top1_agreement = fp32_parity.top1_agreement
    report.test_onnx_max_abs_embedding_diff = fp32_parity.max_abs_embedding_diff
    if search.chosen_model is not None:
        int8 = decisions(onnx_logits(search.chosen_model, images, spec), labels)
        report.test_int8_top1_agreement = float(matches(int8, decisions(reference, labels)).mean())
        report.test_int8_accuracy = float(matches(int8, labels).mean())
        report.test_int8_accuracy_drop = torch_accuracy - report.test_int8_accuracy
