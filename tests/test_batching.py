"""The service's micro-batcher and its settings: batches form only under load, answers keep their order,
a deadline refuses instead of queueing without bound, a failing model reaches every caller."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from imgclf.serving.batching import BatchConfig, MicroBatcher, ModelBusy, available_cores


class Model:
    """Doubles each image; records (how, batch size) per run; `gate` (when set) holds every run until released."""

    def __init__(self, gate: threading.Event | None = None, fail: bool = False) -> None:
        self.runs: list[tuple[str, int]] = []
        self.gate, self.fail = gate, fail
        self.lock = threading.Lock()

    def run(self, how: str, images: np.ndarray) -> np.ndarray:
        with self.lock:
            self.runs.append((how, len(images)))
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            raise RuntimeError("model exploded")
        return images * 2

    def batcher(self, lanes: int = 2, **config) -> MicroBatcher:
        return MicroBatcher(lambda x: self.run("alone", x), lambda x: self.run("lane", x), lanes, BatchConfig(**config))


def images(start: int, count: int) -> np.ndarray:
    return np.arange(start, start + count, dtype=np.float32).reshape(count, 1)


def test_a_lone_image_runs_at_once_on_every_core():
    model = Model()
    out = asyncio.run(model.batcher().run(images(5, 1)))
    assert out.tolist() == [[10.0]] and model.runs == [("alone", 1)]


def test_images_that_queue_while_a_run_holds_the_cores_share_the_lanes_and_keep_their_order():
    gate = threading.Event()
    model = Model(gate)
    seen: list[int] = []
    batcher = model.batcher(lanes=2, max_batch_size=4)
    batcher.on_batch = seen.append

    async def scenario():
        first = asyncio.create_task(batcher.run(images(0, 1)))  # a lone image: every core, held by the gate
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(batcher.run(images(10 * n, 3))) for n in range(1, 5)]  # 12 images queue
        await asyncio.sleep(0.05)
        assert model.runs == [("alone", 1)], "nothing else starts while a lone image holds every core"
        gate.set()
        return await first, await asyncio.gather(*rest)

    first, rest = asyncio.run(scenario())
    assert first.tolist() == [[0.0]]
    for n, out in enumerate(rest, 1):
        assert out.ravel().tolist() == [20.0 * n, 20.0 * n + 2, 20.0 * n + 4]
    assert model.runs == [("alone", 1)] + [("lane", 4)] * 3, "12 queued images: batches of at most 4 on the lanes"
    assert sorted(seen) == [1, 4, 4, 4]


def test_a_small_queue_is_split_across_the_free_lanes():
    gate = threading.Event()
    model = Model(gate)
    batcher = model.batcher(lanes=2)

    async def scenario():
        first = asyncio.create_task(batcher.run(images(0, 1)))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(batcher.run(images(1, 5)))
        await asyncio.sleep(0.05)
        gate.set()
        return await first, await second

    _, second = asyncio.run(scenario())
    assert second.ravel().tolist() == [2.0, 4.0, 6.0, 8.0, 10.0]
    assert model.runs == [("alone", 1), ("lane", 3), ("lane", 2)]


def test_the_lanes_run_at_the_same_time():
    """Each lane run waits for the other at a barrier: run one after the other, they would break it."""
    barrier = threading.Barrier(2, timeout=5)
    model = Model()
    batcher = MicroBatcher(
        lambda x: model.run("alone", x), lambda x: (barrier.wait(), model.run("lane", x))[1], 2, BatchConfig()
    )

    out = asyncio.run(batcher.run(images(0, 2)))  # two images on idle lanes: one each
    assert out.tolist() == [[0.0], [2.0]] and model.runs == [("lane", 1), ("lane", 1)]


def test_an_image_queued_past_the_deadline_is_refused_not_run():
    gate = threading.Event()
    model = Model(gate)
    batcher = model.batcher(max_latency_ms=10)

    async def scenario():
        first = asyncio.create_task(batcher.run(images(0, 1)))
        await asyncio.sleep(0.02)
        late = asyncio.create_task(batcher.run(images(1, 2)))
        await asyncio.sleep(0.1)  # well past the 10 ms deadline while the first run is held
        gate.set()
        return await first, await asyncio.gather(late, return_exceptions=True)

    first, (late,) = asyncio.run(scenario())
    assert first.tolist() == [[0.0]]
    assert isinstance(late, ModelBusy) and "10 ms" in str(late)
    assert model.runs == [("alone", 1)], "the late images never reached the model"


def test_a_failing_model_fails_each_caller_of_that_batch_and_the_next_batch_still_runs():
    model = Model(fail=True)
    batcher = model.batcher(lanes=1)

    async def scenario():
        results = await asyncio.gather(batcher.run(images(0, 2)), batcher.run(images(2, 1)), return_exceptions=True)
        model.fail = False
        return results, await batcher.run(images(7, 1))

    (a, b), after = asyncio.run(scenario())
    assert isinstance(a, RuntimeError) and isinstance(b, RuntimeError) and "exploded" in str(a)
    assert after.tolist() == [[14.0]]


def test_a_cancelled_request_leaves_the_queue_without_running():
    gate = threading.Event()
    model = Model(gate)
    batcher = model.batcher()

    async def scenario():
        first = asyncio.create_task(batcher.run(images(0, 1)))
        await asyncio.sleep(0.02)
        gone = asyncio.create_task(batcher.run(images(1, 4)))  # a client that disconnects while queued
        kept = asyncio.create_task(batcher.run(images(5, 1)))
        await asyncio.sleep(0.02)
        gone.cancel()
        gate.set()
        return await first, await kept

    first, kept = asyncio.run(scenario())
    assert first.tolist() == [[0.0]] and kept.tolist() == [[10.0]]
    assert model.runs == [("alone", 1), ("alone", 1)], "only the kept image ran after the first"


def test_batch_settings_come_from_imgclf_variables_and_errors_name_them():
    assert BatchConfig.from_env({}) == BatchConfig(max_batch_size=16, max_latency_ms=2000)
    config = BatchConfig.from_env({"IMGCLF_MAX_BATCH_SIZE": "8", "IMGCLF_MAX_LATENCY_MS": " 250 "})
    assert (config.max_batch_size, config.max_latency_ms) == (8, 250)
    with pytest.raises(ValueError, match=r"IMGCLF_MAX_BATCH_SIZE: .*greater than or equal to 1"):
        BatchConfig.from_env({"IMGCLF_MAX_BATCH_SIZE": "0"})
    with pytest.raises(ValueError, match=r"IMGCLF_MAX_LATENCY_MS: .*integer"):
        BatchConfig.from_env({"IMGCLF_MAX_LATENCY_MS": "soon"})


def test_ort_threads_follow_the_cores_this_process_may_use(tmp_path, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    cpu_max = tmp_path / "cpu.max"
    assert available_cores(cpu_max) == 6  # no cgroup file
    cpu_max.write_text("max 100000\n")
    assert available_cores(cpu_max) == 6
    cpu_max.write_text("250000 100000\n")  # docker run --cpus 2.5
    assert available_cores(cpu_max) == 3
