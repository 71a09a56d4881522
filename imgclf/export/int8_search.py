"""Which INT8 recipe to serve, chosen by measurement: quantise with each candidate, score it on labelled
images against fp32, time it against fp32 in the same run, and choose the fastest recipe that is
accurate enough, agrees with fp32 and is really faster. When none is, the answer is fp32, and the
result says so.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, Literal

import numpy as np

from imgclf.export.int8_report import Fp32Figures, Int8SearchReport, RecipeRow
from imgclf.export.onnx import cpu_session, onnx_logits
from imgclf.export.quantize import DEFAULT_CANDIDATES, Int8Recipe, prepared, quantize_prepared
from imgclf.latency import (
    LatencyReport,
    describe_machine,
    example_images,
    interleaved_rounds,
    measure_latency,
    onnx_runner,
)
from imgclf.preprocess import PreprocessSpec

log = logging.getLogger(__name__)

NO_RECIPE = "no INT8 recipe beat fp32; serving fp32"
SPEED_TIE = 1.05  # recipes within 5% of the fastest count as equally fast (noise on a shared CPU)
CHOSEN = "chosen: fastest that qualifies (within 5% is a tie, broken by accuracy, then agreement)"
NOT_CHOSEN = "qualifies; another recipe was chosen"

# measure(label, run_batch) -> LatencyReport. `label` is "fp32" or a recipe name; `run_batch` runs
# one batch of uint8 images through that model. Injectable so tests can decide who is faster.
Measure = Callable[[str, Callable[[np.ndarray], Any]], LatencyReport]


def measure_onnx(
    spec: PreprocessSpec, batch_size: int = 32, warmup: int = 3, repeats: int = 20, batch_repeats: int = 5
) -> Measure:
    """The default `Measure`: batch-1 latency and batch-`batch_size` throughput on random images of
    the spec's size, normalisation included (as the service does it)."""
    one, many = example_images(spec, 1), example_images(spec, batch_size, seed=1)
    machine = describe_machine("onnxruntime CPU, all cores, pool threads not spinning")

    def measure(label: str, run_batch: Callable[[np.ndarray], Any]) -> LatencyReport:
        return measure_latency(
            run_batch, one, many, warmup=warmup, repeats=repeats, batch_repeats=batch_repeats, machine=machine
        )

    return measure


def decisions(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """What the model decides: the top-1 class, or for multi-hot `labels` each label with logit >= 0."""
    return (logits >= 0).astype(np.int64) if np.ndim(labels) == 2 else logits.argmax(1)


def matches(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per image: same class, or (multi-label) the same set of labels."""
    a, b = np.asarray(a), np.asarray(b)
    return (a == b).all(axis=1) if a.ndim == 2 else a == b


# -- the search ------------------------------------------------------------------------------------


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

    def row(self, chosen: str | None) -> RecipeRow:
        is_chosen = self.recipe.name == chosen
        return RecipeRow(
            recipe=self.recipe.name,
            speedup=self.speedup,
            images_per_s=self.images_per_s,
            batch1_p50_ms=self.batch1_p50_ms,
            accuracy=self.accuracy,
            accuracy_drop=self.accuracy_drop,
            top1_agreement=self.agreement,
            ok=self.rejected is None,
            chosen=is_chosen,
            why=self.rejected or (CHOSEN if is_chosen else NOT_CHOSEN),
        )


@dataclass
class Int8Search:
    """Every candidate's figures, and the choice: a recipe name, or None for fp32."""

    trials: list[RecipeTrial]
    fp32: Fp32Figures
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

    def report(self) -> Int8SearchReport:
        return Int8SearchReport(
            serve=self.serve,
            chosen_recipe=self.chosen,
            summary=self.summary(),
            tolerance=self.tolerance,
            min_agreement=self.min_agreement,
            min_speedup=self.min_speedup,
            eval_images=self.eval_images,
            timing_rounds=self.rounds,
            fp32=self.fp32,
            recipes=[t.row(self.chosen) for t in self.trials],
        )


@dataclass
class _Reference:
    """The labelled eval images and what fp32 decides on them: what every recipe is scored against."""

    images: np.ndarray
    labels: np.ndarray
    top1: np.ndarray
    accuracy: float


def _check_inputs(candidates, eval_images: np.ndarray, eval_labels: np.ndarray, rounds: int) -> None:
    names = [r.name for r in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"INT8 candidates must differ; duplicate recipe names in {names}")
    if not len(eval_images) or len(eval_images) != len(eval_labels):
        raise ValueError(
            f"the INT8 search needs labelled eval images, got {len(eval_images)} images and {len(eval_labels)} labels"
        )
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")


def _try_recipe(
    trial: RecipeTrial,
    pre: Path,
    fp32_onnx: bytes,
    calibration: np.ndarray,
    reference: _Reference,
    spec: PreprocessSpec,
) -> None:
    """Quantise with the trial's recipe and score it on the reference images; when quantising or
    running it fails, the trial records why and holds no model."""
    try:
        trial.model = quantize_prepared(pre, fp32_onnx, calibration, spec, trial.recipe)
        session = cpu_session(trial.model, spinning=False)
        top1 = decisions(onnx_logits(session, reference.images, spec), reference.labels)
    except Exception as exc:  # a recipe ORT cannot apply to this model is a result, not a crash
        trial.model, trial.error = None, f"{type(exc).__name__}: {exc}"
        trial.rejected = f"quantisation failed: {trial.error}"
        return
    trial.accuracy = float(matches(top1, reference.labels).mean())
    trial.accuracy_drop = reference.accuracy - trial.accuracy
    trial.agreement = float(matches(top1, reference.top1).mean())


def _log_trial(number: int, total: int, trial: RecipeTrial) -> None:
    if trial.model is None:
        log.info("INT8 recipe %d/%d %s: %s, skipped", number, total, trial.recipe.name, trial.rejected)
    else:
        log.info(
            "INT8 recipe %d/%d %s: accuracy %.4f (drop %+.4f), top-1 agreement with fp32 %.4f",
            number,
            total,
            trial.recipe.name,
            trial.accuracy,
            trial.accuracy_drop,
            trial.agreement,
        )


def _time_trials(
    trials: list[RecipeTrial], models: dict[str, bytes], measure: Measure, rounds: int, spec: PreprocessSpec
) -> list[LatencyReport]:
    """Time fp32 and every quantised recipe in interleaved rounds and give each trial its medians;
    fp32's reports, one per round. Each timing opens its own session and drops it afterwards: a
    session keeps its memory arena, and one per recipe held together outgrew a step's memory at 224 px."""

    def timed(label: str, model: bytes) -> LatencyReport:
        return measure(label, onnx_runner(cpu_session(model, spinning=False), spec))

    timers = {label: functools.partial(timed, label, model) for label, model in models.items()}
    reports = interleaved_rounds(timers, rounds, what="INT8 timing rounds", log=log)
    fp32_rates = [r.batch32_images_per_s for r in reports["fp32"]]
    for trial in trials:
        if trial.model is None:
            continue
        own = reports[trial.recipe.name]
        trial.images_per_s = median(r.batch32_images_per_s for r in own)
        trial.batch1_p50_ms = median(r.p50_ms for r in own)
        trial.speedup = median(r.batch32_images_per_s / base for r, base in zip(own, fp32_rates))
    return reports["fp32"]


def _rejection(trial: RecipeTrial, tolerance: float, min_agreement: float, min_speedup: float) -> str | None:
    """Why a quantised trial does not qualify, the first rule it breaks; None when it qualifies."""
    if trial.accuracy_drop > tolerance + 1e-12:
        return f"accuracy drop {trial.accuracy_drop:.4f} > tolerance {tolerance}"
    if trial.agreement < min_agreement - 1e-12:
        return f"top-1 agreement with fp32 {trial.agreement:.4f} < required {min_agreement}"
    if trial.speedup < min_speedup:
        return f"speedup {trial.speedup:.2f}x < required {min_speedup:.2f}x"
    return None


def _choose(trials: list[RecipeTrial]) -> str | None:
    """The fastest qualifying recipe; speeds within the timing noise of the fastest are a tie that
    accuracy, then agreement, break."""
    qualified = [t for t in trials if t.model is not None and t.rejected is None]
    if not qualified:
        return None
    fastest = max(t.speedup for t in qualified)
    tied = [t for t in qualified if t.speedup >= fastest / SPEED_TIE]
    return max(tied, key=lambda t: (t.accuracy, t.agreement, t.speedup)).recipe.name


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
    _check_inputs(candidates, eval_images, eval_labels, rounds)
    labels = np.asarray(eval_labels)
    fp32_top1 = decisions(onnx_logits(cpu_session(fp32_onnx, spinning=False), eval_images, spec), labels)
    reference = _Reference(eval_images, labels, fp32_top1, float(matches(fp32_top1, labels).mean()))

    trials = [RecipeTrial(recipe) for recipe in candidates]
    models = {"fp32": fp32_onnx}
    with prepared(fp32_onnx) as pre:
        for number, trial in enumerate(trials, 1):
            _try_recipe(trial, pre, fp32_onnx, calibration_images, reference, spec)
            _log_trial(number, len(trials), trial)
            if trial.model is not None:
                models[trial.recipe.name] = trial.model

    fp32_reports = _time_trials(trials, models, measure or measure_onnx(spec), rounds, spec)
    for trial in trials:
        if trial.model is not None:
            trial.rejected = _rejection(trial, tolerance, min_agreement, min_speedup)
    fp32 = Fp32Figures(
        accuracy=reference.accuracy,
        images_per_s=median(r.batch32_images_per_s for r in fp32_reports),
        batch1_p50_ms=median(r.p50_ms for r in fp32_reports),
    )
    return Int8Search(
        trials=trials,
        fp32=fp32,
        tolerance=tolerance,
        min_speedup=min_speedup,
        eval_images=len(eval_images),
        rounds=rounds,
        chosen=_choose(trials),
        min_agreement=min_agreement,
    )
