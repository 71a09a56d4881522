"""Training data loading: our decoded cache + CacheLoader against torchvision ImageFolder + PIL + DataLoader.

    source infra/env.sh && python bench/data_loading.py          # 3000 images, 3 timed epochs, ~1 min
    python bench/data_loading.py --images 3000 --epochs 3 --size 64 --batch-size 64 --workers 2
    python bench/data_loading.py --train tf_efficientnet_lite0    # also: the loaders feeding a training step

Both sides read the same files (handwritten digits upscaled to 96 px, tinted, half PNG half JPEG, a
folder per class) and produce uint8 (B, 3, 64, 64) batches with the same augmentation ops
(RandomResizedCrop, horizontal flip, rotation, colour jitter), batch size and number of worker
processes. Epochs alternate between the variants so a busy machine slows them alike; the table gives
medians. "warm": the cache exists and the workers are up; "cold": building the cache and starting
the workers included. The other rows are the measurements behind the choices in imgclf.data.loader
and imgclf.data.cache: threads instead of processes, the per-image v2 transform instead of
BatchAugment, building the cache in-process instead of in worker processes, and (with --train)
what each way of loading leaves to a training step that uses both cores itself. The --train rows
need a machine that is not already busy: when other jobs oversubscribe the cores, torch's spinning
intra-op threads slow every row by up to 10x and the comparison means nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from common import image_folder, scratch_dir
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from imgclf.augment.batched import BatchAugment
from imgclf.augment.policy import AugmentPolicy
from imgclf.data.cache import decoded_cache_path
from imgclf.data.ingest import ingest_folder
from imgclf.data.loader import CacheLoader
from imgclf.models.factory import create
from imgclf.preprocess import PreprocessSpec

POLICY = AugmentPolicy(scale_min=0.6, hflip=0.5, rotation_degrees=15, brightness=0.2, contrast=0.2)


def baseline_loader(root: Path, size: int, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    """The usual recipe: decode and augment PIL images in DataLoader workers, every epoch."""
    transform = v2.Compose(
        [
            v2.Resize((size, size)),  # PreprocessSpec's "squash" resize
            v2.RandomResizedCrop(size, scale=(POLICY.scale_min, 1.0)),
            v2.RandomHorizontalFlip(POLICY.hflip),
            v2.RandomRotation(POLICY.rotation_degrees),
            v2.ColorJitter(POLICY.brightness, POLICY.contrast),
            v2.PILToTensor(),
        ]
    )
    dataset = ImageFolder(str(root), transform=transform)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=True
    )


class PerImageV2:
    """The policy's v2 pipeline image by image (what BatchAugment replaces)."""

    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.stack([self.transform(image) for image in images])


def thread_epoch(loader: CacheLoader, epoch: int, threads: int):
    """CacheLoader's batches produced by a thread pool in this process instead of worker processes."""
    plan = loader.epoch_plan(epoch)
    with ThreadPoolExecutor(threads) as pool:
        pending: deque = deque()
        for key in plan:
            pending.append(pool.submit(loader.dataset.__getitem__, key))
            if len(pending) > 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def timed(batches) -> float:
    """Images per second while consuming `batches`."""
    started, seen = time.perf_counter(), 0
    for images, _ in batches:
        seen += len(images)
    return seen / (time.perf_counter() - started)


def build_rate(manifest, spec: PreprocessSpec, cache_dir: Path, workers: int) -> float:
    """Images per second building a fresh cache."""
    started = time.perf_counter()
    decoded_cache_path(manifest, spec, cache_dir=cache_dir, workers=workers)
    return len(manifest) / (time.perf_counter() - started)


def training_rates(arch: str, cache: Path, labels: np.ndarray, args) -> dict[str, float]:
    """Training images/s of `arch` (from scratch, both cores) fed by each way of loading; median epoch."""
    torch.set_num_threads(os.cpu_count() or 1)
    model, _, _ = create(arch, int(labels.max()) + 1)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters())
    spec = PreprocessSpec(image_size=args.size)
    subset = np.arange(min(args.train_images, len(labels)))
    augment = BatchAugment.from_policy(POLICY, args.size)

    def loader(workers: int) -> CacheLoader:
        return CacheLoader(
            cache,
            labels,
            args.batch_size,
            augment=augment,
            num_workers=workers,
            indices_for_epoch=lambda e, rng: rng.permutation(subset),
        )

    def train(batches) -> float:
        started, seen = time.perf_counter(), 0
        for images, targets in batches:
            x = spec.normalize(images).contiguous(memory_format=torch.channels_last)
            loss = torch.nn.functional.cross_entropy(model(x), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(images)
        return seen / (time.perf_counter() - started)

    names = {
        2: "CacheLoader, 2 worker processes",
        1: "CacheLoader, 1 worker process",
        0: "CacheLoader, in the training process",
    }
    loaders = {names[w]: loader(w) for w in (2, 1, 0)}
    in_process = loaders[names[0]]
    preloaded = list(in_process.epoch(0))
    for name in loaders:
        train(loaders[name].epoch(0))  # warm-up: workers up, kernels chosen
    rates: dict[str, list[float]] = {"batches already in memory (upper bound)": []}
    rates.update({name: [] for name in loaders})
    rates[f"CacheLoader's dataset, {args.workers} threads"] = []
    for epoch in range(1, args.epochs + 1):
        rates["batches already in memory (upper bound)"].append(train(preloaded))
        for name, each in loaders.items():
            rates[name].append(train(each.epoch(epoch)))
        rates[f"CacheLoader's dataset, {args.workers} threads"].append(
            train(thread_epoch(in_process, epoch, args.workers))
        )
    for each in loaders.values():
        each.close()
    return {name: statistics.median(values) for name, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per variant, after one warm-up epoch")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, help="reuse or create the image folder here (default: a temp dir)")
    parser.add_argument(
        "--train", metavar="ARCH", help="also time training ARCH (e.g. tf_efficientnet_lite0) fed by each loader"
    )
    parser.add_argument("--train-images", type=int, default=640, help="images per training epoch with --train")
    args = parser.parse_args()

    with scratch_dir("imgclf-bench-") as scratch:
        run(args, scratch)


def run(args, scratch: Path) -> None:
    root = image_folder(args.data, scratch, args.images)
    manifest = ingest_folder(root)
    labels = manifest.label_indices(manifest.class_names)
    spec = PreprocessSpec(image_size=args.size)
    n = len(manifest)
    augment = BatchAugment.from_policy(POLICY, args.size)

    # cold: from files to the first augmented epoch, cache build and worker start included
    started = time.perf_counter()
    cache = decoded_cache_path(manifest, spec, cache_dir=scratch / "cache", workers=args.workers)
    ours = CacheLoader(cache, labels, args.batch_size, augment=augment, num_workers=args.workers)
    timed(ours.epoch(0))
    cold_ours = n / (time.perf_counter() - started)
    baseline = baseline_loader(root, args.size, args.batch_size, args.workers)
    cold_baseline = timed(baseline)
    per_image = CacheLoader(
        cache, labels, args.batch_size, augment=PerImageV2(POLICY.build(args.size)), num_workers=args.workers
    )
    timed(per_image.epoch(0))

    rates: dict[str, list[float]] = {
        k: [] for k in ("baseline", "ours", "threads", "per_image", "build_processes", "build_inprocess")
    }
    for epoch in range(1, args.epochs + 1):
        rates["baseline"].append(timed(baseline))
        rates["ours"].append(timed(ours.epoch(epoch)))
        threads_before = torch.get_num_threads()
        torch.set_num_threads(1)  # one core per thread, as each worker process has
        rates["threads"].append(timed(thread_epoch(ours, epoch, args.workers)))
        torch.set_num_threads(threads_before)
        rates["per_image"].append(timed(per_image.epoch(epoch)))
        rates["build_processes"].append(build_rate(manifest, spec, scratch / f"cache-p{epoch}", args.workers))
        rates["build_inprocess"].append(build_rate(manifest, spec, scratch / f"cache-1-{epoch}", 1))
    ours.close()
    per_image.close()
    median = {k: statistics.median(v) for k, v in rates.items()}

    print(
        f"data: {n} files, 96 px PNG/JPEG -> {args.size} px, batch {args.batch_size}, "
        f"{args.workers} workers, {os.cpu_count()} cores, median of {args.epochs} epochs"
    )
    print(f"policy: {POLICY.model_dump(exclude_defaults=True)}")
    rows = [
        ("baseline: ImageFolder + PIL + DataLoader, warm", median["baseline"]),
        ("baseline: first epoch (workers starting)", cold_baseline),
        ("ours: cache + CacheLoader + BatchAugment, warm", median["ours"]),
        ("ours: cold (cache build + first epoch)", cold_ours),
        (f"ours, {args.workers} threads instead of processes", median["threads"]),
        ("ours, per-image v2 transform instead of BatchAugment", median["per_image"]),
        (f"cache build, {args.workers} processes", median["build_processes"]),
        ("cache build, in-process", median["build_inprocess"]),
    ]
    print(f"{'loading alone':56s} {'images/s':>9s}")
    for name, rate in rows:
        print(f"{name:56s} {rate:9.0f}")
    print(f"ratio warm ours / baseline: {median['ours'] / median['baseline']:.1f}x (goal >= 3x)")
    print(f"ratio cold ours / baseline first epoch: {cold_ours / cold_baseline:.1f}x")

    if args.train:
        del baseline  # its workers would only compete for the cores
        print(f"\n{'training ' + args.train + ' (from scratch) fed by':56s} {'images/s':>9s}")
        for name, rate in training_rates(args.train, cache, labels, args).items():
            print(f"{name:56s} {rate:9.0f}")


if __name__ == "__main__":
    main()
