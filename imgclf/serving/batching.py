"""Adaptive batching inside the service process: images prepared by concurrent requests run through ONNX
Runtime together, in as many lanes as the process has cores.

Two ways to spend the cores, chosen per batch as OpenVINO's latency and throughput hints do: a lone image
while every lane is idle runs on all cores (one ORT run with an intra-op thread per core: the lowest
latency); anything more is split across the lanes, one single-threaded ORT run per core at once (no
thread barriers inside a run, so no core waits for a preempted one: more images per second under load).
Each batch takes what queued while earlier ones ran, up to max_batch_size. Nothing waits on purpose, so a
lone request runs at once and batches grow only with load. max_latency_ms is a deadline, not a wait: an
image that has queued longer than that is refused (ModelBusy, a 503 with Retry-After) instead of queueing
without bound.

Why not BentoML's `@bentoml.api(batchable=True)`: BentoML batches the inputs of an HTTP endpoint, so either
decoding would run inside the batch (a slow upload would hold up everyone's answer) or the model would sit
behind a second service and an internal HTTP hop, which on two cores cost a third of the throughput and,
under load, answered some requests with a 500 when the hop's connection dropped.

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
    """Interactive defaults: up to 16 images a run (the lanes' images/s by batch size in
    bench/service_load.py levels off before that) and a deadline far above a full batch, so only real
    overload is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(16, ge=1, le=1024, description="images in one ORT run; 1 turns batching off")
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

    `run_alone(images)` uses every core for one batch; `run_lane(images)` uses one core and runs in up to
    `lanes` threads at once. Lives in one event loop (the worker's), which alone touches the queue and the
    lane count. `on_batch(size)` is told each run's size (the batch-size metric)."""

    def __init__(
        self,
        run_alone: Callable[[np.ndarray], np.ndarray],
        run_lane: Callable[[np.ndarray], np.ndarray],
        lanes: int,
        config: BatchConfig,
        on_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.run_alone, self.run_lane, self.lanes = run_alone, run_lane, max(1, lanes)
        self.config, self.on_batch = config, on_batch
        self._queue: deque[_Queued] = deque()
        self._free = self.lanes
        self._threads = ThreadPoolExecutor(self.lanes, thread_name_prefix="imgclf-model")

    async def run(self, images: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        queued = [_Queued(image, loop.create_future()) for image in images]
        self._queue.extend(queued)
        self._dispatch()
        try:
            return np.stack(await asyncio.gather(*(q.future for q in queued)))
        except BaseException:
            for q in queued:  # a cancelled request (client gone) frees its places in the queue
                q.future.cancel()
            raise

    def _dispatch(self) -> None:
        """Start batches while lanes are free: a lone image on all cores, else the queue shared by the free lanes."""
        while self._free:
            self._refuse_expired()
            if not self._queue:
                return
            if self._free == self.lanes and len(self._queue) == 1:
                self._start([self._queue.popleft()], self.run_alone, self.lanes)
            else:
                share = min(self.config.max_batch_size, -(-len(self._queue) // self._free))
                self._start([self._queue.popleft() for _ in range(share)], self.run_lane, 1)

    def _refuse_expired(self) -> None:
        """Drop cancelled images from the queue's head and refuse those past the deadline (oldest first)."""
        deadline = time.monotonic() - self.config.max_latency_ms / 1000
        while self._queue and (self._queue[0].future.done() or self._queue[0].since < deadline):
            q = self._queue.popleft()
            if not q.future.done():
                q.future.set_exception(ModelBusy(f"queued longer than {self.config.max_latency_ms} ms"))
        for q in [q for q in self._queue if q.future.done()]:
            self._queue.remove(q)

    def _start(self, batch: list[_Queued], run: Callable[[np.ndarray], np.ndarray], lanes: int) -> None:
        self._free -= lanes
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._threads, run, np.stack([q.image for q in batch]))
        done.add_done_callback(lambda outcome: self._finish(batch, outcome, lanes))

    def _finish(self, batch: list[_Queued], outcome: asyncio.Future, lanes: int) -> None:
        self._free += lanes
        error = outcome.exception()
        if error is None:
            self.on_batch(len(batch))
        for i, q in enumerate(batch):
            if q.future.done():
                continue
            if error is not None:  # the model failed: every caller of this batch hears it
                q.future.set_exception(error)
            else:
                q.future.set_result(outcome.result()[i])
        self._dispatch()
