"""Batch inference throughput: the sharded path (imgclf.batch: N spawned worker processes, each with a
single-threaded ORT session, over N shards, parquet out, merged and counted) against a plain single-process
loop (one ORT session on every core, one image at a time: read, decode, resize, normalise, run), over the
same generated files in the same run, rounds alternating between the two.

    python bench/batch_inference.py                               # 4000 images, 64 px, one worker per core
    python bench/batch_inference.py --images 1000 --rounds 1       # a quick run

The model is tf_efficientnet_lite0 with random weights and a 10-class head, exported fp32 at `--size` (only
speed is measured). The images are scikit-learn's digits drawn at 96 px (PNG and JPEG), so every image is
decoded and resized. The sharded figure is the whole call: spawning the workers, loading the model in each,
writing and reading back the shard parquets and checking the count. Both paths decode with the service's
decoder and caps; the labels of the two are compared. Reported: images/s of each per round, the best
round's ratio. This is a measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import scratch_dir, write_images


def make_bundle(folder: Path, size: int) -> Path:
    """tf_efficientnet_lite0 (random weights, 10 classes) as a servable bundle at `size` px."""
    from imgclf.bundle import ONNX_FILE
    from imgclf.export.onnx import export_onnx
    from imgclf.models.factory import create
    from imgclf.models.trained import TrainedModel
    from imgclf.preprocess import PreprocessSpec

    model, mean, std = create("tf_efficientnet_lite0", 10, pretrained=False)
    spec = PreprocessSpec(image_size=size, mean=mean, std=std)
    trained = TrainedModel("tf_efficientnet_lite0", [str(i) for i in range(10)], spec, model.state_dict())
    bundle = trained.save(folder / "bundle")
    (bundle / ONNX_FILE).write_bytes(export_onnx(trained))
    return bundle


def plain_loop(bundle: Path, images: Path, files: list[str]) -> tuple[float, dict[str, str]]:
    """(images/s, labels): one session, one image at a time, as a script would."""
    from imgclf.serving.predictor import Predictor

    started = time.perf_counter()
    predictor = Predictor.from_path(bundle, "bench")  # one session on every core this process may use
    labels = {}
    for key in files:
        try:
            labels[key] = predictor.predict((images / key).read_bytes(), top_k=1)["label"]
        except ValueError:  # ImageRejected: none expected here
            labels[key] = ""
    return len(files) / (time.perf_counter() - started), labels


def sharded(bundle: Path, images: Path, out: Path, workers: int, shards: int) -> tuple[float, dict[str, str]]:
    """(images/s, labels) of the whole sharded call, merge and count included."""
    from imgclf.batch.classify import ClassifySettings
    from imgclf.batch.gather import merge, read_shards
    from imgclf.batch.inputs import list_inputs
    from imgclf.batch.local import classify_in_processes
    from imgclf.batch.shards import plan_shards

    started = time.perf_counter()
    plan = plan_shards(list_inputs(images), shards)
    classify_in_processes(plan, bundle, "bench", out, workers, ClassifySettings(threads=1))
    merged, _, summary = merge(plan, *read_shards(out))
    rate = summary.total / (time.perf_counter() - started)
    return rate, dict(zip(merged["file"], merged["label"].fillna(""), strict=True))


def main() -> None:
    from imgclf.serving.batching import available_cores

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--size", type=int, default=64, help="model input size in px")
    parser.add_argument("--workers", type=int, default=available_cores(), help="worker processes (default: cores)")
    parser.add_argument("--shards", type=int, default=None, help="default: as many as workers")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the two paths")
    args = parser.parse_args()
    shards = args.shards or args.workers
    with scratch_dir("imgclf-bench-batch-") as scratch:
        images = scratch / "images"
        write_images(images, args.images)
        bundle = make_bundle(scratch, args.size)
        files = sorted(p.relative_to(images).as_posix() for p in images.rglob("*") if p.is_file())
        best = [0.0, 0.0]
        for round_ in range(args.rounds):
            plain_rate, plain_labels = plain_loop(bundle, images, files)
            shard_rate, shard_labels = sharded(bundle, images, scratch / f"out-{round_}", args.workers, shards)
            agree = sum(plain_labels[k] == shard_labels[k] for k in files) / len(files)
            print(
                f"round {round_ + 1}: plain loop {plain_rate:.0f} images/s, sharded ({args.workers} workers, "
                f"{shards} shards) {shard_rate:.0f} images/s, labels agree on {agree:.1%}",
                flush=True,
            )
            best = [max(best[0], plain_rate), max(best[1], shard_rate)]
    print(
        f"\n{args.images} images at {args.size} px, {available_cores()} cores: plain loop {best[0]:.0f} images/s, "
        f"sharded {best[1]:.0f} images/s, {best[1] / best[0]:.2f}x (best round of each)"
    )


if __name__ == "__main__":
    main()
