"""Latency of a model on this machine: batch-1 p50/p95 in milliseconds and batch-32 throughput.

`measure_latency` only needs a callable that runs one batch, so the same code times a torch module
(`torch_runner`), an ONNX Runtime session (`onnx_runner`) or anything else. The numbers depend on
the machine, its load and its thread settings: they are measurements to record and gate on, never
values to assert in tests.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np

from imgclf.logs import Progress

T = TypeVar("T")
_log = logging.getLogger(__name__)


@dataclass
class LatencyReport:
    p50_ms: float  # batch 1, median wall time per call
    p95_ms: float  # batch 1, 95th percentile
    batch32_images_per_s: float  # images / s at the throughput batch size (median call time)
    mean_ms: float = 0.0  # batch 1
    batch32_p50_ms: float = 0.0  # median wall time of one throughput batch
    batch_size: int = 32  # the throughput batch size actually used
    warmup: int = 5
    repeats: int = 50  # batch-1 timed calls
    batch_repeats: int = 10  # throughput timed calls
    machine: str = ""  # where it was measured (cpu count, platform; device and threads when known)

    def metrics(self) -> dict[str, float]:
        return {
            "latency_p50_ms": self.p50_ms,
            "latency_p95_ms": self.p95_ms,
            "batch32_images_per_s": self.batch32_images_per_s,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _time_calls(run_batch: Callable[[Any], Any], x: Any, warmup: int, repeats: int) -> np.ndarray:
    for _ in range(warmup):
        run_batch(x)
    times = np.empty(repeats, dtype=np.float64)
    for i in range(repeats):
        start = time.perf_counter_ns()
        run_batch(x)
        times[i] = (time.perf_counter_ns() - start) / 1e6
    return times


def measure_latency(
    run_batch: Callable[[Any], Any],
    example_input_batch1: Any,
    example_input_batch32: Any,
    *,
    warmup: int = 5,
    repeats: int = 50,
    batch_repeats: int | None = None,
    machine: str | None = None,
) -> LatencyReport:
    """Time `run_batch` on a batch of 1 (`repeats` calls) and on a batch of 32 (`batch_repeats`
    calls, default max(3, repeats // 5)), each after `warmup` untimed calls.

    `run_batch` must return only when the work is done (for CUDA, synchronise inside it; the runners
    here do). The throughput batch size is read from the example's first dimension.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    batch_repeats = max(3, repeats // 5) if batch_repeats is None else batch_repeats
    if batch_repeats < 1:
        raise ValueError(f"batch_repeats must be >= 1, got {batch_repeats}")
    batch_size = len(example_input_batch32)
    if batch_size < 1 or len(example_input_batch1) != 1:
        raise ValueError(
            f"need a batch of 1 and a non-empty throughput batch, got {len(example_input_batch1)} and {batch_size}"
        )

    single = _time_calls(run_batch, example_input_batch1, warmup, repeats)
    many = _time_calls(run_batch, example_input_batch32, warmup, batch_repeats)
    batch_ms = float(np.median(many))
    return LatencyReport(
        p50_ms=float(np.percentile(single, 50)),
        p95_ms=float(np.percentile(single, 95)),
        batch32_images_per_s=float(batch_size / (batch_ms / 1e3)) if batch_ms > 0 else float("inf"),
        mean_ms=float(single.mean()),
        batch32_p50_ms=batch_ms,
        batch_size=batch_size,
        warmup=int(warmup),
        repeats=int(repeats),
        batch_repeats=int(batch_repeats),
        machine=machine if machine is not None else describe_machine(),
    )


def interleaved_rounds(
    timers: Mapping[str, Callable[[], T]], rounds: int, what: str = "timing rounds", log: logging.Logger | None = None
) -> dict[str, list[T]]:
    """Call every timer once per round, in an order rotated each round, so that load which comes and
    goes on a shared machine hits every contender alike; callers keep the medians over rounds.
    Progress is logged as `what` on `log` (this module's logger by default) when it takes a while."""
    names = list(timers)
    results: dict[str, list[T]] = {name: [] for name in names}
    tracker = Progress(what, rounds * len(names), log or _log, unit="timings")
    for number in range(rounds):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(timers[name]())
            tracker.advance()
    tracker.finish()
    return results


def describe_machine(extra: str = "") -> str:
    parts = [platform.machine() or "unknown", f"{os.cpu_count()} cpus", platform.system()]
    if extra:
        parts.append(extra)
    return ", ".join(parts)


# -- runners --------------------------------------------------------------------------------------
def torch_runner(model: Any, spec: Any = None, device: Any = None) -> Callable[[np.ndarray], Any]:
    """A `run_batch` for a torch module in eval mode, under inference_mode.

    With a `PreprocessSpec`, inputs are uint8 images (N, H, W, 3) and normalisation is timed too (as
    the service does it); without, inputs are model-ready float32 arrays (N, 3, H, W).
    On CUDA the call synchronises before returning so the timing covers the work.
    """
    import torch

    model.eval()
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    sync = dev.type == "cuda"

    def run(batch: np.ndarray) -> Any:
        x = spec.normalize(np.asarray(batch)) if spec is not None else np.asarray(batch, dtype=np.float32)
        with torch.inference_mode():
            out = model(torch.from_numpy(np.ascontiguousarray(x)).to(dev))
        if sync:
            torch.cuda.synchronize(dev)
        return out

    return run


def onnx_runner(session: Any, spec: Any = None) -> Callable[[np.ndarray], Any]:
    """A `run_batch` for an onnxruntime InferenceSession (or anything with get_inputs() and run())."""
    name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> Any:
        x = spec.normalize(np.asarray(batch)) if spec is not None else np.asarray(batch, dtype=np.float32)
        return session.run(None, {name: np.ascontiguousarray(x)})

    return run


def example_images(spec: Any, batch_size: int, seed: int = 0) -> np.ndarray:
    """Random uint8 images (batch_size, size, size, 3) shaped for `spec` (timing does not need real pixels)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(batch_size, spec.image_size, spec.image_size, 3), dtype=np.uint8)


def measure_model_latency(
    model: Any, spec: Any, *, warmup: int = 5, repeats: int = 50, batch_size: int = 32, device: Any = None
) -> LatencyReport:
    """Latency of a torch module including preprocessing, on random images of the spec's size."""
    import torch

    runner = torch_runner(model, spec, device)
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    return measure_latency(
        runner,
        example_images(spec, 1),
        example_images(spec, batch_size, seed=1),
        warmup=warmup,
        repeats=repeats,
        machine=describe_machine(f"torch {dev}, {torch.get_num_threads()} threads"),
    )
