"""Runtimes side by side (torch, ONNX Runtime fp32 and INT8, OpenVINO): latency, throughput and
accuracy of each, timed in interleaved rounds so that a burst of load hits them all alike."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from statistics import median
from typing import Any

import numpy as np

from imgclf.latency import LatencyReport, example_images, interleaved_rounds, measure_latency
from imgclf.preprocess import PreprocessSpec

log = logging.getLogger(__name__)

ORT_FP32 = "ORT fp32"  # the runtime the others are compared with


RunBatch = Callable[[np.ndarray], Any]  # uint8 images (N, H, W, 3) -> outputs, for timing
Logits = Callable[[np.ndarray], np.ndarray]  # uint8 images -> logits, for accuracy


@dataclass
class Runtime:
    """A runtime by name, opened afresh (a session, a compiled model) for each timing and dropped
    afterwards: a session keeps its memory arena, and four held at once outgrew a step's memory at 224 px."""

    name: str
    open: Callable[[], tuple[RunBatch, Logits]]


@dataclass
class RuntimeRow:
    """One runtime's figures (export_report.json's "runtimes"): medians over the rounds."""

    runtime: str
    batch1_p50_ms: float
    batch1_p95_ms: float
    images_per_s: float  # at the throughput batch size
    accuracy: float  # on the eval images
    throughput_vs_baseline: float
    accuracy_delta: float  # this accuracy - the baseline's


def compare_runtimes(
    runtimes: list[Runtime],
    eval_images: np.ndarray,
    eval_labels: np.ndarray,
    spec: PreprocessSpec,
    baseline: str,
    rounds: int = 3,
    batch_size: int = 32,
) -> list[RuntimeRow]:
    """Batch-1 p50/p95 and batch-`batch_size` throughput of each runtime, timed in `rounds`
    interleaved rounds (medians), with accuracy on the eval images and ratios to `baseline`."""
    one, many = example_images(spec, 1), example_images(spec, batch_size, seed=1)
    labels = np.asarray(eval_labels)

    def timed(runtime: Runtime) -> LatencyReport:
        run_batch, _ = runtime.open()
        return measure_latency(run_batch, one, many, warmup=3, repeats=30, batch_repeats=5)

    def accuracy_of(runtime: Runtime) -> float:
        _, logits = runtime.open()
        return float((logits(eval_images).argmax(1) == labels).mean())

    timers = {r.name: functools.partial(timed, r) for r in runtimes}
    reports = interleaved_rounds(timers, rounds, what="runtime timing rounds", log=log)
    accuracy = {r.name: accuracy_of(r) for r in runtimes}
    rates = {name: median(r.batch32_images_per_s for r in own) for name, own in reports.items()}
    return [
        RuntimeRow(
            runtime=runtime.name,
            batch1_p50_ms=median(r.p50_ms for r in reports[runtime.name]),
            batch1_p95_ms=median(r.p95_ms for r in reports[runtime.name]),
            images_per_s=rates[runtime.name],
            accuracy=accuracy[runtime.name],
            throughput_vs_baseline=rates[runtime.name] / rates[baseline],
            accuracy_delta=accuracy[runtime.name] - accuracy[baseline],
        )
        for runtime in runtimes
    ]


def runtime_table(rows: list[RuntimeRow], baseline: str) -> str:
    """The `compare_runtimes` rows as an aligned text table."""
    width = max(len(row.runtime) for row in rows)
    lines = [
        f"{'runtime':{width}s} {'b1 p50 ms':>10s} {'b1 p95 ms':>10s} {'b32 img/s':>10s} {'vs ' + baseline:>14s} "
        f"{'accuracy':>9s} {'delta':>8s}"
    ]
    for row in rows:
        lines.append(
            f"{row.runtime:{width}s} {row.batch1_p50_ms:10.2f} {row.batch1_p95_ms:10.2f} {row.images_per_s:10.0f} "
            f"{row.throughput_vs_baseline:13.2f}x {row.accuracy:9.4f} {row.accuracy_delta:+8.4f}"
        )
    return "\n".join(lines)
