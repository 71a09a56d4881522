"""Static INT8 quantisation with ONNX Runtime, chosen by measurement instead of by default.

Which recipe pays off depends on the CPU and the network. On this project's machine (x86 with
AVX512-VNNI) ORT's documented default, QDQ with int8 activations and weights (S8S8), ran slower than
fp32 (0.72x EfficientNet-Lite0, 0.92x ResNet18 at batch 32), while uint8 activations (U8S8) gave
1.29x and 3.58x. So `search_int8` quantises with a few candidate recipes calibrated on a sample of
training images, times each against fp32 in the same run, scores each on labelled validation images,
and chooses the fastest recipe that is accurate enough, agrees with fp32 and is really faster. When none is, the answer is fp32, and
the result says so.
"""

from __future__ import annotations

import contextlib
import functools
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, Callable, Iterator, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from imgclf.latency import LatencyReport, describe_machine, example_images, interleaved_rounds, measure_latency, onnx_runner
from imgclf.bundle import ONNX_INPUT
from imgclf.export.onnx import cpu_session, onnx_logits
from imgclf.preprocess import PreprocessSpec

# Only the compute ops by default: quantising the shape arithmetic of timm's TF-"SAME" padding
# (Shape, Ceil, Pad, ...) dropped EfficientNet-Lite0's top-1 agreement with fp32 to 44% on the digits.
COMPUTE_OPS = ("Conv", "Gemm", "MatMul", "Clip", "Add")
RECIPE_METADATA_KEY = "imgclf.int8_recipe"
NO_RECIPE = "no INT8 recipe beat fp32; serving fp32"


class Int8Recipe(BaseModel):
    """One way to quantise: ONNX Runtime `quantize_static` settings, named so a table can show them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["QDQ", "QOperator"] = "QDQ"
    activations: Literal["U8", "S8"] = "U8"
    weights: Literal["S8", "U8"] = "S8"
    per_channel: bool = True
    calibration: Literal["MinMax", "Entropy", "Percentile"] = "MinMax"
    op_types: tuple[str, ...] | None = Field(COMPUTE_OPS, description="op types to quantise; null: every op ORT can quantise")
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
# Short enough to search in well under a minute on a small model: ORT's default (S8S8, per tensor)
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
def _prepared(fp32: bytes) -> Iterator[Path]:
    """The fp32 model after ORT's quantisation pre-processing (shape inference, graph optimisation),
    in a temp folder that also receives the quantised models; done once for every recipe."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="imgclf-int8-") as tmp:
        src, pre = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx")
        src.write_bytes(fp32)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        yield pre


def _quantize(pre: Path, fp32: bytes, calibration_images: np.ndarray, spec: PreprocessSpec, recipe: Int8Recipe, batch_size: int) -> bytes:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not len(calibration_images):
        raise ValueError("INT8 calibration needs images (a sample of the train split), got none")
    if recipe.fp32_nodes:
        names = {node.name for node in onnx.load(str(pre)).graph.node}
        missing = [n for n in recipe.fp32_nodes if n not in names]
        if missing:
            raise ValueError(f"recipe {recipe.name}: fp32_nodes {missing} are not nodes of the pre-processed model (e.g. {sorted(names)[:5]})")

    # Full batches only (one short batch when there are fewer images): the histogram calibrators
    # (Entropy, Percentile) fail on a last batch of another size ("inhomogeneous shape").
    count = len(calibration_images) - len(calibration_images) % batch_size or len(calibration_images)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._starts = iter(range(0, count, batch_size))

        def get_next(self):
            start = next(self._starts, None)
            return None if start is None else {ONNX_INPUT: spec.normalize(calibration_images[start : start + batch_size])}

    types = {"U8": QuantType.QUInt8, "S8": QuantType.QInt8}
    dst = pre.with_name(f"{recipe.name}.onnx")
    with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress lines
        quantize_static(
            str(pre),
            str(dst),
            Reader(),
            quant_format=QuantFormat[recipe.format],
            activation_type=types[recipe.activations],
            weight_type=types[recipe.weights],
            per_channel=recipe.per_channel,
            calibrate_method=CalibrationMethod[recipe.calibration],
            op_types_to_quantize=list(recipe.op_types) if recipe.op_types is not None else None,
            nodes_to_exclude=list(recipe.fp32_nodes) or None,
        )
    proto = onnx.load(str(dst))
    del proto.metadata_props[:]
    for prop in onnx.load_from_string(fp32).metadata_props:  # class names and PreprocessSpec travel along
        proto.metadata_props.add(key=prop.key, value=prop.value)
    proto.metadata_props.add(key=RECIPE_METADATA_KEY, value=recipe.model_dump_json())
    return proto.SerializeToString()


def quantize_int8(
    fp32: bytes, calibration_images: np.ndarray, spec: PreprocessSpec, recipe: Int8Recipe = DEFAULT_RECIPE, batch_size: int = 32
) -> bytes:
    """Static INT8 of an `export_onnx` model with one recipe, calibrated on `calibration_images`
    (uint8 (N, H, W, 3)); the file keeps the fp32 file's metadata and records the recipe."""
    with _prepared(fp32) as pre:
        return _quantize(pre, fp32, calibration_images, spec, recipe, batch_size)


# -- choosing -------------------------------------------------------------------------------------

# measure(label, run_batch) -> LatencyReport. `label` is "fp32" or a recipe name; `run_batch` runs
# one batch of uint8 images through that model. Injectable so tests can decide who is faster.
Measure = Callable[[str, Callable[[np.ndarray], Any]], LatencyReport]


def measure_onnx(spec: PreprocessSpec, batch_size: int = 32, warmup: int = 3, repeats: int = 20, batch_repeats: int = 5) -> Measure:
    """The default `Measure`: batch-1 latency and batch-`batch_size` throughput on random images of
    the spec's size, normalisation included (as the service does it)."""
    one, many = example_images(spec, 1), example_images(spec, batch_size, seed=1)
    machine = describe_machine("onnxruntime CPU, all cores, pool threads not spinning")

    def measure(label: str, run_batch: Callable[[np.ndarray], Any]) -> LatencyReport:
        return measure_latency(run_batch, one, many, warmup=warmup, repeats=repeats, batch_repeats=batch_repeats, machine=machine)

    return measure


@dataclass
class RecipeTrial:
    """One candidate recipe: its model (None if quantising failed), accuracy and speed against fp32."""

    recipe: Int8Recipe
    model: bytes | None = field(default=None, repr=False)
    error: str | None = None  # why quantising or loading failed
    accuracy: float | None = None
    accuracy_drop: float | None = None  # fp32 accuracy - this accuracy
    agreement: float | None = None  # top-1 agreement with fp32 on the eval images
    images_per_s: float | None = None  # batch-32 throughput, median over the rounds
    batch1_p50_ms: float | None = None
    speedup: float | None = None  # median over the rounds of (this / fp32 throughput in the same round)
    rejected: str | None = None  # why it does not qualify; None: it qualifies

    def row(self, chosen: str | None) -> dict[str, Any]:
        return {
            "recipe": self.recipe.name,
            "speedup": self.speedup,
            "images_per_s": self.images_per_s,
            "batch1_p50_ms": self.batch1_p50_ms,
            "accuracy": self.accuracy,
            "accuracy_drop": self.accuracy_drop,
            "top1_agreement": self.agreement,
            "ok": self.rejected is None,
            "chosen": self.recipe.name == chosen,
            "why": self.rejected or ("chosen: fastest that qualifies (within 5% is a tie, broken by accuracy, then agreement)"
                                     if self.recipe.name == chosen else "qualifies; another recipe was chosen"),
        }


@dataclass
class Int8Search:
    """Every candidate's figures, and the choice: a recipe name, or None for fp32."""

    trials: list[RecipeTrial]
    fp32_accuracy: float
    fp32_images_per_s: float
    fp32_batch1_p50_ms: float
    tolerance: float
    min_speedup: float
    eval_images: int
    rounds: int
    chosen: str | None = None
    min_agreement: float = 0.99

    @property
    def chosen_trial(self) -> RecipeTrial | None:
        return next((t for t in self.trials if t.recipe.name == self.chosen), None)

    @property
    def chosen_model(self) -> bytes | None:
        trial = self.chosen_trial
        return trial.model if trial is not None else None

    @property
    def serve(self) -> Literal["int8", "fp32"]:
        return "int8" if self.chosen is not None else "fp32"

    def best_agreeing(self) -> RecipeTrial | None:
        """The chosen trial, else the quantised one closest to fp32 (agreement, then speed): the INT8
        file to hand out for inspection when fp32 is served."""
        done = [t for t in self.trials if t.model is not None]
        return self.chosen_trial or max(done, key=lambda t: (t.agreement or 0.0, t.speedup or 0.0), default=None)

    def summary(self) -> str:
        trial = self.chosen_trial
        if trial is None:
            return NO_RECIPE
        return (
            f"serving INT8 recipe {trial.recipe.name}: {trial.speedup:.2f}x ORT fp32 at batch 32, "
            f"accuracy {trial.accuracy:.4f} (drop {trial.accuracy_drop:+.4f}), top-1 agreement {trial.agreement:.4f}"
        )

    def report(self) -> dict[str, Any]:
        """JSON-ready: the choice, the rules it was made by, fp32's figures and the recipe table."""
        return {
            "serve": self.serve,
            "chosen_recipe": self.chosen,
            "summary": self.summary(),
            "tolerance": self.tolerance,
            "min_agreement": self.min_agreement,
            "min_speedup": self.min_speedup,
            "eval_images": self.eval_images,
            "timing_rounds": self.rounds,
            "fp32": {"accuracy": self.fp32_accuracy, "images_per_s": self.fp32_images_per_s, "batch1_p50_ms": self.fp32_batch1_p50_ms},
            "recipes": [t.row(self.chosen) for t in self.trials],
        }


SPEED_TIE = 1.05  # recipes within 5% of the fastest count as equally fast (noise on a shared CPU)


def decisions(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """What the model decides: the top-1 class, or for multi-hot `labels` each label with logit >= 0."""
    return (logits >= 0).astype(np.int64) if np.ndim(labels) == 2 else logits.argmax(1)


def matches(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per image: same class, or (multi-label) the same set of labels."""
    a, b = np.asarray(a), np.asarray(b)
    return (a == b).all(axis=1) if a.ndim == 2 else a == b


def search_int8(
    fp32_onnx: bytes,
    calibration_images: np.ndarray,
    eval_images: np.ndarray,
    eval_labels: np.ndarray,
    spec: PreprocessSpec,
    *,
    tolerance: float = 0.01,
    min_agreement: float = 0.99,
    min_speedup: float = 1.05,
    candidates: tuple[Int8Recipe, ...] | list[Int8Recipe] = DEFAULT_CANDIDATES,
    measure: Measure | None = None,
    rounds: int = 3,
    calibration_batch_size: int = 32,
) -> Int8Search:
    """Quantise with each candidate (calibrated on `calibration_images`), score it on the labelled
    `eval_images` and time it against the fp32 model, and choose the fastest recipe whose accuracy
    drop is at most `tolerance`, whose top-1 agreement with fp32 is at least `min_agreement` (a
    recipe can keep the accuracy while flipping other images), and whose batch-32 speedup is at
    least `min_speedup`.

    Timing runs `rounds` rounds, each timing fp32 and every recipe once, in an order rotated every
    round; a recipe's speedup is the median of its per-round ratios to fp32, so load that comes and
    goes on the machine hits both sides of a ratio. A recipe that fails to quantise is recorded with
    its error and the search goes on.
    """
    names = [r.name for r in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"INT8 candidates must differ; duplicate recipe names in {names}")
    if not len(eval_images) or len(eval_images) != len(eval_labels):
        raise ValueError(f"the INT8 search needs labelled eval images, got {len(eval_images)} images and {len(eval_labels)} labels")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    measure = measure or measure_onnx(spec)
    labels = np.asarray(eval_labels)
    fp32_session = cpu_session(fp32_onnx, spinning=False)
    fp32_top1 = decisions(onnx_logits(fp32_session, eval_images, spec), labels)
    fp32_accuracy = float(matches(fp32_top1, labels).mean())

    trials = [RecipeTrial(recipe) for recipe in candidates]
    runners = {"fp32": onnx_runner(fp32_session, spec)}
    with _prepared(fp32_onnx) as pre:
        for trial in trials:
            try:
                trial.model = _quantize(pre, fp32_onnx, calibration_images, spec, trial.recipe, calibration_batch_size)
                session = cpu_session(trial.model, spinning=False)
                top1 = decisions(onnx_logits(session, eval_images, spec), labels)
            except Exception as exc:  # noqa: BLE001 - a recipe ORT cannot apply to this model is a result, not a crash
                trial.model, trial.error = None, f"{type(exc).__name__}: {exc}"
                trial.rejected = f"quantisation failed: {trial.error}"
                continue
            trial.accuracy = float(matches(top1, labels).mean())
            trial.accuracy_drop = fp32_accuracy - trial.accuracy
            trial.agreement = float(matches(top1, fp32_top1).mean())
            runners[trial.recipe.name] = onnx_runner(session, spec)

    reports = interleaved_rounds({label: functools.partial(measure, label, run) for label, run in runners.items()}, rounds)

    fp32_rates = [r.batch32_images_per_s for r in reports["fp32"]]
    for trial in trials:
        if trial.model is None:
            continue
        own = reports[trial.recipe.name]
        trial.images_per_s = median(r.batch32_images_per_s for r in own)
        trial.batch1_p50_ms = median(r.p50_ms for r in own)
        trial.speedup = median(r.batch32_images_per_s / base for r, base in zip(own, fp32_rates))
        if trial.accuracy_drop > tolerance + 1e-12:
            trial.rejected = f"accuracy drop {trial.accuracy_drop:.4f} > tolerance {tolerance}"
        elif trial.agreement < min_agreement - 1e-12:
            trial.rejected = f"top-1 agreement with fp32 {trial.agreement:.4f} < required {min_agreement}"
        elif trial.speedup < min_speedup:
            trial.rejected = f"speedup {trial.speedup:.2f}x < required {min_speedup:.2f}x"
    qualified = [t for t in trials if t.model is not None and t.rejected is None]
    chosen = None
    if qualified:  # speeds within the timing noise of the fastest are a tie: accuracy, then agreement, break it
        fastest = max(t.speedup for t in qualified)
        tied = [t for t in qualified if t.speedup >= fastest / SPEED_TIE]
        chosen = max(tied, key=lambda t: (t.accuracy, t.agreement, t.speedup)).recipe.name
    return Int8Search(
        trials=trials,
        fp32_accuracy=fp32_accuracy,
        fp32_images_per_s=median(fp32_rates),
        fp32_batch1_p50_ms=median(r.p50_ms for r in reports["fp32"]),
        tolerance=tolerance,
        min_speedup=min_speedup,
        eval_images=len(eval_images),
        rounds=rounds,
        chosen=chosen,
        min_agreement=min_agreement,
    )


def recipe_table_markdown(report: dict[str, Any]) -> str:
    """The `Int8Search.report()` dict as Markdown: the choice in words, then one row per recipe."""

    def num(value: Any, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    fp32 = report["fp32"]
    lines = [
        f"**{report['summary']}**",
        "",
        f"Rules: accuracy drop <= {report['tolerance']}, top-1 agreement with fp32 >= {report['min_agreement']}, batch-32 speedup >= {report['min_speedup']}x ORT fp32 "
        f"(median of {report['timing_rounds']} interleaved rounds); accuracy on {report['eval_images']} eval images.",
        "",
        "| recipe | speedup | images/s (batch 32) | batch-1 p50 ms | accuracy | drop | top-1 agreement | ok | why |",
        "|---|---:|---:|---:|---:|---:|---:|:-:|---|",
        f"| ORT fp32 (baseline) | 1.00x | {fp32['images_per_s']:.0f} | {fp32['batch1_p50_ms']:.2f} | {fp32['accuracy']:.4f} | — | — | | |",
    ]
    for row in report["recipes"]:
        name = f"**{row['recipe']}**" if row["chosen"] else row["recipe"]
        why = row["why"].replace("|", "/").replace("\n", " ")
        lines.append(
            f"| {name} | {num(row['speedup'], '.2f')}{'x' if row['speedup'] is not None else ''} | {num(row['images_per_s'], '.0f')} "
            f"| {num(row['batch1_p50_ms'], '.2f')} | {num(row['accuracy'], '.4f')} | {num(row['accuracy_drop'], '+.4f')} "
            f"| {num(row['top1_agreement'], '.4f')} | {'yes' if row['ok'] else 'no'} | {why} |"
        )
    return "\n".join(lines) + "\n"
