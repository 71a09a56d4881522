"""Serving throughput and latency: this service (`imgclf serve`, BentoML) against the service a user would
write from the usual tutorial (bench/tutorial_service.py: FastAPI + ONNX Runtime, one image per request),
same ONNX model and the same images, in the same run, at concurrency 1, 8 and 32; beside raw in-process
ORT throughput at batch 32 and latency at batch 1, the ceiling for any HTTP service.

    source infra/env.sh && python bench/service_load.py            # 224 px (photo models) and 64 px (the default run)
    python bench/service_load.py --sizes 64 --requests 60          # a quick run

The model is tf_efficientnet_lite0 from its offline ImageNet weights with a fresh 10-class head, exported
fp32 at each size (only speed is measured, so the head is not trained). The images are scikit-learn's
digits drawn larger than the model size (PNG and JPEG), so every request decodes and resizes. The load
generator is threads with keep-alive connections, each sending its share of `--requests` uploads after a
warm-up, in four turns that alternate between the two services; it runs on the same 2 cores as the
servers, as a client beside the service would. Raw ORT (a
default session: every core) is measured before and after the services and the higher figure is the
ceiling, so a noisy moment cannot flatter the services; then the service's lanes alone in process (one
single-threaded ORT run per core at once) by batch size, which is how IMGCLF_MAX_BATCH_SIZE's default
was chosen, and the core-ms per image of the lanes and of the work on an upload before the model (decode,
resize, normalise, statistics), whose sum bounds any service on these cores. Reported: requests/s, p50 and p95 latency,
requests/s as a share of that ceiling, and this service's p50 over the tutorial's at the same concurrency.

This is a measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from common import free_port, scratch_dir, write_images

HERE = Path(__file__).resolve().parent


def make_bundle(folder: Path, size: int) -> Path:
    """tf_efficientnet_lite0 (ImageNet weights, 10-class head) as a servable bundle at `size` px."""
    from imgclf.bundle import ONNX_FILE
    from imgclf.export.onnx import export_onnx
    from imgclf.models.factory import create
    from imgclf.models.trained import TrainedModel
    from imgclf.preprocess import PreprocessSpec

    model, mean, std = create("tf_efficientnet_lite0", 10, pretrained=True)
    spec = PreprocessSpec(image_size=size, mean=mean, std=std)
    trained = TrainedModel("tf_efficientnet_lite0", [str(i) for i in range(10)], spec, model.state_dict())
    bundle = trained.save(folder / f"bundle-{size}")
    (bundle / ONNX_FILE).write_bytes(export_onnx(trained))
    return bundle


def raw_ort(onnx: Path, size: int) -> tuple[float, float]:
    """(batch-32 images/s, batch-1 p50 ms) in process, all cores."""
    import onnxruntime as ort

    from imgclf.latency import measure_latency, onnx_runner

    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    one, many = (rng.standard_normal((n, 3, size, size)).astype(np.float32) for n in (1, 32))
    report = measure_latency(onnx_runner(session), one, many, repeats=40, batch_repeats=10)
    return report.batch32_images_per_s, report.p50_ms


def lane_throughput(onnx: Path, size: int, batch_sizes=(1, 4, 16, 32), seconds: float = 1.5) -> dict[int, float]:
    """{batch size: images/s} of the service's lanes in process: one single-threaded ORT run per core at
    once (Predictor.predict_lane), each lane repeating batches of that size for `seconds`."""
    from imgclf.serving.predictor import Predictor

    predictor = Predictor(onnx)
    images = np.random.default_rng(0).standard_normal((max(batch_sizes), 3, size, size)).astype(np.float32)
    found = {}
    for batch_size in batch_sizes:
        counts: list[float] = []

        def lane(batch: np.ndarray = images[:batch_size], counts: list[float] = counts) -> None:
            predictor.predict_lane(batch)
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                predictor.predict_lane(batch)
                done += len(batch)
            counts.append(done / (time.perf_counter() - start))

        lanes = [threading.Thread(target=lane) for _ in range(predictor.lanes)]
        for thread in lanes:
            thread.start()
        for thread in lanes:
            thread.join()
        found[batch_size] = sum(counts)
    return found


def upload_cost_ms(onnx: Path, uploads: list[bytes], repeats: int = 3) -> float:
    """Core-ms per upload of what the service does to it before the model, on one thread: decode, resize,
    normalise, image statistics and sha256 (serving.observation.observe)."""
    from imgclf.serving.observation import observe
    from imgclf.serving.predictor import Predictor

    predictor = Predictor(onnx)
    for data in uploads:
        observe(predictor, data)
    start = time.process_time()
    for _ in range(repeats):
        for data in uploads:
            observe(predictor, data)
    return 1e3 * (time.process_time() - start) / (repeats * len(uploads))


def multipart(image: bytes, name: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    kind = "image/png" if name.endswith(".png") else "image/jpeg"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="image"; filename="{name}"\r\n'
        f"Content-Type: {kind}\r\n\r\n"
    )
    return head.encode() + image + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def load(port: int, bodies: list[tuple[bytes, str]], concurrency: int, total: int) -> tuple[float, list[float]]:
    """(seconds, latencies in ms) of `total` uploads from `concurrency` keep-alive clients."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(share: int, offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine = []
        for i in range(share):
            body, content_type = bodies[(offset + i) % len(bodies)]
            start = time.perf_counter()
            conn.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - start)
            if response.status != 200:
                errors.append(f"HTTP {response.status}")
        conn.close()
        with lock:
            latencies.extend(mine)

    shares = [total // concurrency + (1 if i < total % concurrency else 0) for i in range(concurrency)]
    threads = [threading.Thread(target=client, args=(n, i * 7)) for i, n in enumerate(shares)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} of {total} requests failed, e.g. {errors[0]}")
    return wall, [1e3 * t for t in latencies]


def compare(ports: dict[str, int], bodies: list[tuple[bytes, str]], concurrency: int, total: int, rounds: int = 4):
    """{service: (requests/s, p50 ms, p95 ms)}: `total` uploads each, sent in `rounds` turns that alternate
    between the services, so a noisy moment on a shared machine falls on both rather than on one."""
    walls = dict.fromkeys(ports, 0.0)
    latencies: dict[str, list[float]] = {name: [] for name in ports}
    for port in ports.values():
        load(port, bodies, concurrency, max(10, concurrency))  # warm-up
    for turn in range(rounds):
        for name, port in ports.items():
            wall, ms = load(port, bodies, concurrency, total // rounds + (turn < total % rounds))
            walls[name] += wall
            latencies[name] += ms
    return {
        name: (len(ms) / walls[name], float(np.percentile(ms, 50)), float(np.percentile(ms, 95)))
        for name, ms in latencies.items()
    }


def start_tutorial(onnx: Path, size: int, port: int) -> subprocess.Popen:
    env = {**os.environ, "TUTORIAL_MODEL": str(onnx), "TUTORIAL_SIZE": str(size)}
    cmd = [sys.executable, "-m", "uvicorn", "tutorial_service:app", "--app-dir", str(HERE), "--port", str(port)]
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("the tutorial service did not start")


def measure_size(size: int, scratch: Path, args: argparse.Namespace) -> list[list[str]]:
    from imgclf.serving.batching import available_cores
    from imgclf.serving.deployment import DeployConfig, start, stop

    bundle = make_bundle(scratch, size)
    images = scratch / f"images-{size}"
    write_images(images, 32, side=int(size * 1.5))
    uploads = {p.name: p.read_bytes() for p in sorted(images.rglob("*.*"))}
    bodies = [multipart(data, name) for name, data in uploads.items()]
    uploads = list(uploads.values())
    before = raw_ort(bundle / "model.onnx", size)
    ours = start(bundle, "bench", "1", DeployConfig(port=free_port(), ready_timeout_s=120))
    tutorial_port = free_port()
    tutorial = start_tutorial(bundle / "model.onnx", size, tutorial_port)
    measured = []
    try:
        services = {"tutorial (FastAPI + ORT)": tutorial_port, "imgclf (BentoML)": int(ours.url.rsplit(":", 1)[1])}
        for concurrency in args.concurrency:
            for name, (rps, p50, p95) in compare(services, bodies, concurrency, args.requests).items():
                measured.append((name, concurrency, rps, p50, p95))
                print(f"{name} at {concurrency}: {rps:.1f} requests/s, p50 {p50:.1f} ms, p95 {p95:.1f} ms", flush=True)
    finally:
        stop(ours.pid)
        tutorial.terminate()
        tutorial.wait(timeout=30)
    after = raw_ort(bundle / "model.onnx", size)
    ceiling, b1_ms = max(before[0], after[0]), min(before[1], after[1])
    print(f"raw ORT: {before[0]:.1f} and {after[0]:.1f} images/s before and after the services", flush=True)
    lanes = lane_throughput(bundle / "model.onnx", size)
    print(f"{size} px, the service's lanes in process, images/s by batch size:", flush=True)
    print(", ".join(f"batch {b}: {rate:.0f} ({rate / ceiling:.2f}x raw)" for b, rate in lanes.items()), flush=True)
    cores = available_cores()
    model_ms, upload_ms = cores * 1e3 / lanes[16], upload_cost_ms(bundle / "model.onnx", uploads)
    bound = cores * 1e3 / (model_ms + upload_ms)
    print(
        f"{size} px, per image in core-ms: the lanes at batch 16 {model_ms:.1f}, the upload before the model "
        f"{upload_ms:.1f}; so on {cores} cores any service doing both answers at most {bound:.0f} images/s "
        f"({100 * bound / ceiling:.0f}% of raw ORT) before HTTP, the client and the prediction log",
        flush=True,
    )
    rows = [[f"{size} px", "raw ORT in process", "-", f"{ceiling:.1f} images/s (batch 32)", f"{b1_ms:.1f} (batch 1)"]]
    rows[0] += ["-", "100%", "-"]
    tutorial_p50 = {c: p50 for name, c, _, p50, _ in measured if name.startswith("tutorial")}
    for name, concurrency, rps, p50, p95 in measured:
        versus = "-" if name.startswith("tutorial") else f"{p50 / tutorial_p50[concurrency]:.2f}x"
        rows.append([f"{size} px", name, str(concurrency), f"{rps:.1f} requests/s", f"{p50:.1f}", f"{p95:.1f}"])
        rows[-1] += [f"{100 * rps / ceiling:.0f}%", versus]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 64])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=320, help="timed uploads per service and concurrency")
    args = parser.parse_args()
    rows = []
    with scratch_dir("imgclf-service-load-") as scratch:
        for size in args.sizes:
            rows += measure_size(size, scratch, args)
    print("\n| size | service | concurrency | throughput | p50 ms | p95 ms | of raw ORT batch 32 | p50 vs tutorial |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
