"""Static INT8 quantisation with ONNX Runtime: the recipes (named `quantize_static` settings) and
quantising an fp32 export with one of them.

Which recipe pays off depends on the CPU and the network: on some x86 CPUs ORT's documented default
(QDQ, int8 activations and weights) runs slower than fp32 while uint8 activations run much faster
(README has the figures). So no recipe is assumed: `imgclf.export.int8_search` tries the candidates
here and chooses by measurement.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from imgclf.bundle import ONNX_EMBEDDING, ONNX_INPUT
from imgclf.preprocess import PreprocessSpec

# Only the compute ops by default: quantising the shape arithmetic of timm's TF-"SAME" padding
# (Shape, Ceil, Pad, ...) wrecked EfficientNet-Lite0's top-1 agreement with fp32.
COMPUTE_OPS = ("Conv", "Gemm", "MatMul", "Clip", "Add")
RECIPE_METADATA_KEY = "imgclf.int8_recipe"
CALIBRATION_BATCH_PIXELS = 32 * 112 * 112


class Int8Recipe(BaseModel):
    """One way to quantise: ONNX Runtime `quantize_static` settings, named so a table can show them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["QDQ", "QOperator"] = "QDQ"
    activations: Literal["U8", "S8"] = "U8"
    weights: Literal["S8", "U8"] = "S8"
    per_channel: bool = True
    calibration: Literal["MinMax", "Entropy", "Percentile"] = "MinMax"
    op_types: tuple[str, ...] | None = Field(
        COMPUTE_OPS, description="op types to quantise; null: every op ORT can quantise"
    )
    fp32_nodes: tuple[str, ...] = Field((), description="names of nodes (after ORT's pre-processing) left in fp32")

    @field_validator("op_types")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError("op_types must name at least one op type (or be null for every op ORT can quantise)")
        return value

    @property
    def name(self) -> str:
        """e.g. `qdq-u8s8-perchannel-minmax`, plus `-ops=conv+gemm` / `-fp32=2nodes` when not the defaults."""
        parts = [
            self.format.lower(),
            f"{self.activations}{self.weights}".lower(),
            "perchannel" if self.per_channel else "pertensor",
            self.calibration.lower(),
        ]
        if self.op_types is None:
            parts.append("allops")
        elif self.op_types != COMPUTE_OPS:
            parts.append("ops=" + "+".join(op.lower() for op in self.op_types))
        if self.fp32_nodes:
            parts.append(f"fp32={len(self.fp32_nodes)}nodes")
        return "-".join(parts)


DEFAULT_RECIPE = Int8Recipe()
# Short enough to search quickly on a small model: ORT's default (S8S8, per tensor)
# as the baseline to beat, U8S8 per channel and per tensor, U8S8 without Clip/Add (fewer Q/DQ pairs
# between convolutions), the QOperator format, and a percentile calibration (accuracy, not speed).
DEFAULT_CANDIDATES: tuple[Int8Recipe, ...] = (
    Int8Recipe(activations="S8", per_channel=False),
    DEFAULT_RECIPE,
    Int8Recipe(per_channel=False),
    Int8Recipe(op_types=("Conv", "Gemm", "MatMul")),
    Int8Recipe(format="QOperator"),
    Int8Recipe(calibration="Percentile"),
)


# -- quantising -----------------------------------------------------------------------------------


@contextlib.contextmanager
def prepared(fp32: bytes) -> Iterator[Path]:
    """The fp32 model after ORT's quantisation pre-processing (shape inference, graph optimisation),
    in a temp folder that also receives the quantised models; done once for all recipes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="imgclf-int8-") as tmp:
        src, pre = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx")
        src.write_bytes(fp32)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        yield pre


def _check_fp32_nodes(pre: Path, recipe: Int8Recipe) -> None:
    import onnx

    if not recipe.fp32_nodes:
        return
    names = {node.name for node in onnx.load(str(pre)).graph.node}
    missing = [n for n in recipe.fp32_nodes if n not in names]
    if missing:
        raise ValueError(
            f"recipe {recipe.name}: fp32_nodes {missing} are not nodes of the pre-processed model "
            f"(e.g. {sorted(names)[:5]})"
        )


def _embedding_nodes(pre: Path) -> list[str]:
    """The projection's nodes (the Sub and MatMul that make the `embedding` output), left in fp32:
    quantising them would round the embedding to 256 levels on top of the backbone's own error."""
    import onnx

    graph = onnx.load(str(pre)).graph
    producer = {out: node for node in graph.node for out in node.output}
    names, tensor = [], ONNX_EMBEDDING
    while tensor in producer and producer[tensor].op_type in ("MatMul", "Sub") and len(names) < 2:
        names.append(producer[tensor].name)
        tensor = producer[tensor].input[0]
    return names


def calibration_batch_size(image_size: int) -> int:
    """Images per calibration batch: as many pixels as 32 images at 112 px, at any image size. ORT
    keeps a batch's activations (every one of them for the histogram calibrators), so a batch of 32
    at 224 px held several GB."""
    return max(1, min(32, CALIBRATION_BATCH_PIXELS // image_size**2))


def _calibration_reader(images: np.ndarray, spec: PreprocessSpec, batch_size: int):
    """ORT's CalibrationDataReader over `images`, normalised as the service does it, with the
    `__len__`/`set_range` that ORT's strided calibration calls to feed it one batch at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    starts = range(0, len(images), batch_size)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.set_range(0, len(starts))

        def __len__(self) -> int:
            return len(starts)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._starts = iter(starts[start_index:end_index])

        def get_next(self):
            start = next(self._starts, None)
            return None if start is None else {ONNX_INPUT: spec.normalize(images[start : start + batch_size])}

    return Reader()


def _with_metadata(quantised: Path, fp32: bytes, recipe: Int8Recipe) -> bytes:
    """The quantised model with the fp32 file's metadata (class names, PreprocessSpec) and the recipe."""
    import onnx

    proto = onnx.load(str(quantised))
    del proto.metadata_props[:]
    for prop in onnx.load_from_string(fp32).metadata_props:
        proto.metadata_props.add(key=prop.key, value=prop.value)
    proto.metadata_props.add(key=RECIPE_METADATA_KEY, value=recipe.model_dump_json())
    return proto.SerializeToString()


def quantize_prepared(
    pre: Path, fp32: bytes, calibration_images: np.ndarray, spec: PreprocessSpec, recipe: Int8Recipe
) -> bytes:
    """`quantize_int8` on a model already `prepared`: the search quantises one prepared model many times.
    The embedding projection, when the model has one, stays fp32 (`_embedding_nodes`).
    Calibration is streamed: ORT's strided calibration (`CalibStridedMinMax`, which every calibrator
    honours) collects and folds one batch at a time, so memory is bounded by the batch, not by the
    number of calibration images."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not len(calibration_images):
        raise ValueError("INT8 calibration needs images (a sample of the train split), got none")
    _check_fp32_nodes(pre, recipe)
    types = {"U8": QuantType.QUInt8, "S8": QuantType.QInt8}
    dst = pre.with_name(f"{recipe.name}.onnx")
    with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress lines
        quantize_static(
            str(pre),
            str(dst),
            _calibration_reader(calibration_images, spec, calibration_batch_size(spec.image_size)),
            quant_format=QuantFormat[recipe.format],
            activation_type=types[recipe.activations],
            weight_type=types[recipe.weights],
            per_channel=recipe.per_channel,
            calibrate_method=CalibrationMethod[recipe.calibration],
            op_types_to_quantize=list(recipe.op_types) if recipe.op_types is not None else None,
            nodes_to_exclude=[*recipe.fp32_nodes, *_embedding_nodes(pre)] or None,
            extra_options={"CalibStridedMinMax": 1},
        )
    return _with_metadata(dst, fp32, recipe)


def quantize_int8(
    fp32: bytes,
    calibration_images: np.ndarray,
    spec: PreprocessSpec,
    recipe: Int8Recipe = DEFAULT_RECIPE,
) -> bytes:
    """Static INT8 of an `export_onnx` model with one recipe, calibrated on `calibration_images`
    (uint8 (N, H, W, 3)); the file keeps the fp32 file's metadata and records the recipe."""
    with prepared(fp32) as pre:
        return quantize_prepared(pre, fp32, calibration_images, spec, recipe)
