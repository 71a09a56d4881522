"""Adaptive batching inside the service process: images prepared by concurrent requests run through ONNX
Runtime together, one batch at a time, in one thread that may use every core the process is allowed.

Why not BentoML's `@bentoml.api(batchable=True)`: BentoML batches the inputs of an HTTP endpoint, so either
decoding would run inside the batch (a slow upload would hold up everyone's answer) or the model would sit
behind a second service and an internal HTTP hop, which on two cores cost a third of the throughput and,
under load, answered some requests with a 500 when the hop's connection dropped. Here the hop is a
function call: requests decode in worker threads, queue their arrays, and each batch takes whatever queued
while the previous one ran (up to max_batch_size). Nothing waits on purpose, so a lone request runs at
once and batches grow only with load. max_latency_ms is a deadline, not a wait: an image that has queued
longer than that is refused (ModelBusy, a 503 with Retry-After) instead of queueing without bound.

Settings: IMGCLF_MAX_BATCH_SIZE and IMGCLF_MAX_LATENCY_MS.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_BATCH_SIZE_ENV = "IMGCLF_MAX_BATCH_SIZE"
MAX_LATENCY_MS_ENV = "IMGCLF_MAX_LATENCY_MS"
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


class BatchConfig(BaseModel):
    """Interactive defaults: up to 32 images a run (where CPU throughput of photo models levels off) and a
    deadline far above one full batch, so only a real overload is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(32, ge=1, le=1024, description="images in one ORT run; 1 turns batching off")
    max_latency_ms: int = Field(2000, ge=10, le=600_000, description="longest an image may queue")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BatchConfig:
        environ = os.environ if environ is None else environ
        names = {"max_batch_size": MAX_BATCH_SIZE_ENV, "max_latency_ms": MAX_LATENCY_MS_ENV}
        values = {name: environ[env].strip() for name, env in names.items() if env in environ}
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(f"{names[str(e['loc'][0])]}: {e['msg']}" for e in exc.errors(include_input=False))
            raise ValueError(f"batching settings: {problems}") from None


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may run on: its CPU affinity (taskset, cpusets), lowered to a cgroup v2 CPU quota
    (a container's --cpus) when there is one. os.cpu_count() would count the whole host."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


class ModelBusy(Exception):
    """An image queued past the deadline: the service is overloaded and the client should retry."""


@dataclass
class _Queued:
    image: np.ndarray
    future: asyncio.Future
    since: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """`await batcher.run(images)` -> their outputs, in order, each image batched with other requests'.

    Lives in one event loop (the worker's); `run_batch` runs in its own single thread, never two at once.
    `on_batch(size)` is told each run's size (the batch-size metric)."""

    def __init__(
        self,
        run_batch: Callable[[np.ndarray], np.ndarray],
        config: BatchConfig,
        on_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.run_batch, self.config, self.on_batch = run_batch, config, on_batch
        self._queue: deque[_Queued] = deque()
        self._worker: asyncio.Task | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="imgclf-model")

    async def run(self, images: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        queued = [_Queued(image, loop.create_future()) for image in images]
        self._queue.extend(queued)
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        try:
            return np.stack(await asyncio.gather(*(q.future for q in queued)))
        except BaseException:
            for q in queued:  # a cancelled request (client gone) frees its places in the queue
                q.future.cancel()
            raise

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch = self._take()
            if not batch:
                continue
            try:
                outputs = await loop.run_in_executor(self._thread, self.run_batch, np.stack([q.image for q in batch]))
            except Exception as exc:  # the model failed: every caller of this batch hears it
                for q in batch:
                    if not q.future.done():
                        q.future.set_exception(exc)
                continue
            self.on_batch(len(batch))
            for q, row in zip(batch, outputs):
                if not q.future.done():
                    q.future.set_result(row)

    def _take(self) -> list[_Queued]:
        """Up to max_batch_size live images from the queue; those past the deadline are refused."""
        deadline = time.monotonic() - self.config.max_latency_ms / 1000
        batch: list[_Queued] = []
        while self._queue and len(batch) < self.config.max_batch_size:
            q = self._queue.popleft()
            if q.future.done():  # cancelled
                continue
            if q.since < deadline:
                q.future.set_exception(ModelBusy(f"queued longer than {self.config.max_latency_ms} ms"))
                continue
            batch.append(q)
        return batch
