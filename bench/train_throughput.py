"""Training throughput: imgclf's loop (fit_manifest) against the plain PyTorch loop a user would write.

    source infra/env.sh && python bench/train_throughput.py     # 3000 images, 2 epochs each, ~2 min on 2 idle cores
    python bench/train_throughput.py --images 3000 --epochs 2 --arch tf_efficientnet_lite0 \
        --image-size 64 --batch-size 64 --workers 2            # the defaults, spelled out
    python bench/train_throughput.py --images 512 --epochs 1   # a quick smoke run

Both sides train the same timm model from scratch (no pretrained weights) on the same files in the
same process: handwritten digits (scikit-learn) upscaled to 96 px RGB, tinted and shifted, half PNG
half JPEG, a folder per class, written once into a temp dir. Same batch size, image size, worker
count and augmentation (RandomResizedCrop scale 0.85-1 and RandomRotation 10 degrees), AdamW and
cross-entropy.

- plain: torchvision.datasets.ImageFolder + PIL transforms (Resize, RandomResizedCrop,
  RandomRotation, ToTensor, Normalize) + DataLoader(shuffle=True, num_workers=--workers) +
  timm.create_model, default memory format (NCHW), torch's default thread count.
- ours: ingest_folder -> a split manifest with every image in train (plus one image per class,
  repeated, as a tiny val split that fit needs) -> imgclf.train.loop.fit_manifest with
  TrainConfig(arch, pretrained=False, image_size, batch_size, epochs, num_workers) and
  AugmentPolicy(rotation_degrees=10, scale_min=0.85): the decoded uint8 cache, CacheLoader worker
  processes with BatchAugment, channels_last, and fit's thread setting (all cores).

How it is timed, identically on both sides: every batch the training step takes is timestamped by
a wrapper around the epoch's batch iterator (for ours, a CacheLoader subclass put in place of the
one fit builds), from the moment the loop asks for the epoch's first batch to the moment it asks
for the batch after the last. So each epoch's loader start-up counts (the plain DataLoader restarts
its workers every epoch, ours keeps them), while what fit does between epochs (validation,
logging) does not. "steady" leaves out the first --warmup batches of the run (worker start, first
kernel choices) and covers the rest of all epochs. The loop's own figure,
`trained.info["steady_train_images_per_s"]` (median per-epoch rate of epochs 2.., the same
per-epoch window without the between-epoch work; epoch 1 when there is only one), is printed beside
the same statistic of the plain loop's epochs as a cross-check. The cache build is not in either
training figure: it is reported on its own, cold (decoding every file) and warm (finding the file),
and in the end-to-end wall times.

Optional rows (skip with --no-ceiling): the model step alone on batches already in memory, NCHW and
channels_last: the most any loader could reach on this machine. This is a measurement, not a test:
nothing is asserted. Other jobs on the machine make torch's spinning threads far slower (up to 10x
here), so the run reports the share of CPU that other processes used during each loop and warns
above 10%; `--rounds 2` alternates the two loops and prints medians.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from common import CpuWatch, image_folder, scratch_dir

from imgclf.augment.policy import AugmentPolicy
from imgclf.data.cache import decoded_cache_path
from imgclf.data.ingest import ingest_folder
from imgclf.data.loader import CacheLoader
from imgclf.data.manifest import DatasetManifest
from imgclf.preprocess import PreprocessSpec
from imgclf.train import batches, loop
from imgclf.train.config import TrainConfig

ROTATION, SCALE_MIN = 10, 0.85


# -- timing ----------------------------------------------------------------------------------------


class EpochLog:
    """Per epoch: the time the loop asked for the first batch, then the time it asked for each next
    one (= the end of the previous step), and the batch sizes."""

    def __init__(self) -> None:
        self.epochs: list[tuple[list[float], list[int]]] = []

    def wrap(self, batches):
        times, sizes = [time.perf_counter()], []
        for batch in batches:  # the iterator is created here: worker start-up is inside the epoch
            sizes.append(len(batch[1]))
            yield batch
            times.append(time.perf_counter())
        self.epochs.append((times, sizes))

    def steady(self, warmup: int) -> float:
        """Images/s over all epochs, the first `warmup` batches of the run left out, gaps between epochs too."""
        seconds, images = 0.0, 0
        for number, (times, sizes) in enumerate(self.epochs):
            skip = min(warmup, len(sizes) - 1) if number == 0 else 0
            seconds += times[len(sizes)] - times[skip]
            images += sum(sizes[skip:])
        return images / seconds

    def per_epoch(self) -> list[float]:
        return [sum(sizes) / (times[len(sizes)] - times[0]) for times, sizes in self.epochs]

    def loop_style(self) -> float:
        """As fit's `steady_train_images_per_s`: the median epoch rate, epoch 1 left out when there are more."""
        rates = self.per_epoch()
        return statistics.median(rates[1:] or rates)


@contextlib.contextmanager
def threads(count: int | None):
    """Run with `count` torch threads (None: leave as is), restoring the setting afterwards (fit sets it)."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- the plain loop --------------------------------------------------------------------------------


def plain_model(arch: str, num_classes: int) -> tuple[torch.nn.Module, tuple, tuple]:
    if arch.startswith("torchvision/"):
        import torchvision

        name = arch.split("/", 1)[1]
        model = torchvision.models.get_model(name, num_classes=num_classes)
        return model, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    import timm

    model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    cfg = model.pretrained_cfg or {}
    return model, tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))


def plain_loop(root: Path, args, log: EpochLog, device: str = "cpu") -> float:
    """What a user writes from the seed (on `device`, fp32, NCHW); returns the wall seconds of the call."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    started = time.perf_counter()
    torch.manual_seed(0)
    dataset_classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    model, mean, std = plain_model(args.arch, len(dataset_classes))
    transform = transforms.Compose(
        [
            transforms.Resize(args.image_size),
            transforms.RandomResizedCrop(args.image_size, scale=(SCALE_MIN, 1.0)),
            transforms.RandomRotation(ROTATION),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    dataset = ImageFolder(str(root), transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, pin_memory=device != "cpu"
    )
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters())
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    for _ in range(args.epochs):
        for images, targets in log.wrap(loader):
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            optimizer.zero_grad()
            loss = criterion(model(images), targets)
            loss.backward()
            optimizer.step()
    if device != "cpu":
        torch.cuda.synchronize()
    return time.perf_counter() - started


# -- ours ------------------------------------------------------------------------------------------


def train_manifest(root: Path) -> DatasetManifest:
    """Every image in train; one image per class again as val (fit selects on val; kept tiny)."""
    manifest = ingest_folder(root)
    records = manifest.records.assign(split="train")
    val = records.groupby("label", sort=True).head(1).assign(split="val")
    return DatasetManifest(manifest.root, pd.concat([records, val], ignore_index=True))


def our_loop(manifest: DatasetManifest, args, log: EpochLog, **config_overrides):
    """fit_manifest with the loader's epochs timestamped; returns (TrainedModel, wall seconds).
    `config_overrides`: TrainConfig fields beyond the shared ones (e.g. compile=True)."""

    class TimedCacheLoader(CacheLoader):
        def epoch(self, epoch):
            return log.wrap(super().epoch(epoch))

    config = TrainConfig(
        arch=args.arch,
        pretrained=False,
        image_size=args.image_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        num_workers=args.workers,
        threads=args.threads,
        **config_overrides,
    )
    policy = AugmentPolicy(rotation_degrees=ROTATION, scale_min=SCALE_MIN)
    original = batches.CacheLoader  # the loader fit builds (in imgclf.train.batches)
    batches.CacheLoader = TimedCacheLoader
    try:
        started = time.perf_counter()
        trained = loop.fit_manifest(manifest, config, policy)
        return trained, time.perf_counter() - started
    finally:
        batches.CacheLoader = original


# -- the ceiling -----------------------------------------------------------------------------------


def model_step_alone(args, num_classes: int, channels_last: bool, batches: int = 30, warmup: int = 5) -> float:
    """Images/s of forward + backward + AdamW on random batches already in memory (no loading at all)."""
    torch.manual_seed(0)
    model, _, _ = plain_model(args.arch, num_classes)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    y = torch.randint(0, num_classes, (args.batch_size,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters())
    model.train()
    for number in range(warmup + batches):
        if number == warmup:
            started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return batches * args.batch_size / (time.perf_counter() - started)


# -- main ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per loop")
    parser.add_argument("--arch", default="tf_efficientnet_lite0", help="timm name (or torchvision/<name>)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="loader worker processes, both loops")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads for both loops (default: torch's default for the plain loop, "
        "fit's default, all cores, for ours)",
    )
    parser.add_argument("--warmup", type=int, default=5, help="batches at the start of the run left out of 'steady'")
    parser.add_argument("--rounds", type=int, default=1, help="alternate plain and ours this many times; medians")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the model-step-alone rows")
    parser.add_argument("--data", type=Path, help="reuse or create the image folder here (default: a temp dir)")
    args = parser.parse_args()

    with scratch_dir("imgclf-train-bench-") as scratch:
        run(args, scratch)


def run(args, scratch: Path) -> None:
    root = image_folder(args.data, scratch, args.images)
    os.environ["IMGCLF_CACHE_DIR"] = str(scratch / "cache")  # fit_manifest's cache, fresh for this run
    manifest = train_manifest(root)
    train_set = manifest.subset("train")
    resize = PreprocessSpec(image_size=args.image_size)  # what fit_manifest resizes with

    started = time.perf_counter()
    decoded_cache_path(train_set, resize)  # the same call fit_manifest makes (default workers)
    cache_cold = time.perf_counter() - started
    started = time.perf_counter()
    decoded_cache_path(train_set, resize)
    cache_warm = time.perf_counter() - started

    keys = ("plain", "ours", "plain_loop", "ours_loop", "ours_reported", "plain_wall", "ours_wall")
    results: dict[str, list[float]] = {k: [] for k in keys}
    plain_watch, our_watch = CpuWatch(), CpuWatch()
    for _ in range(args.rounds):
        plain_log, our_log = EpochLog(), EpochLog()
        with threads(args.threads), plain_watch():
            results["plain_wall"].append(plain_loop(root, args, plain_log))
        with threads(None), our_watch():  # fit sets its own thread count; restored for the next round
            trained, wall = our_loop(manifest, args, our_log)
        results["ours_wall"].append(wall)
        results["plain"].append(plain_log.steady(args.warmup))
        results["ours"].append(our_log.steady(args.warmup))
        results["plain_loop"].append(plain_log.loop_style())
        results["ours_loop"].append(our_log.loop_style())
        results["ours_reported"].append(trained.info["steady_train_images_per_s"])
        print(
            "round: plain epochs "
            + " ".join(f"{r:.0f}" for r in plain_log.per_epoch())
            + " | ours epochs "
            + " ".join(f"{r:.0f}" for r in our_log.per_epoch())
            + " | ours as fit reports them "
            + " ".join(f"{h['train_images_per_s']:.0f}" for h in trained.history)
            + " images/s"
            + (
                f" | CPU used by other processes: plain {plain_watch.shares[-1]:.0%}, ours {our_watch.shares[-1]:.0%}"
                if our_watch.shares
                else ""
            ),
            flush=True,
        )
    median = {k: statistics.median(v) for k, v in results.items()}
    num_classes = len(manifest.class_names)

    ceiling = {}
    if not args.no_ceiling:
        with threads(args.threads or os.cpu_count()):
            ceiling = {cl: model_step_alone(args, num_classes, cl) for cl in (False, True)}

    n = len(train_set)
    print(
        f"\n{args.arch}, from scratch: {n} files (96 px PNG/JPEG) -> {args.image_size} px, batch {args.batch_size}, "
        f"{args.epochs} epochs, {args.workers} loader workers, {os.cpu_count()} cores, "
        f"threads plain {args.threads or torch.get_num_threads()} / ours {args.threads or os.cpu_count()}"
        + (f", median of {args.rounds} rounds" if args.rounds > 1 else "")
    )
    print(
        f"augmentation: RandomResizedCrop(scale={SCALE_MIN}-1) + RandomRotation({ROTATION}); "
        f"steady = batches {args.warmup + 1}.. of the run"
    )
    print(f"{'training images/s':58s} {'steady':>8s} {'per epoch, as fit':>18s}")
    print(
        f"{'plain: ImageFolder + PIL + DataLoader + timm, NCHW':58s} {median['plain']:8.0f} "
        f"{median['plain_loop']:18.0f}"
    )
    print(
        f"{'ours: cache + CacheLoader + fit_manifest, channels_last':58s} {median['ours']:8.0f} "
        f"{median['ours_loop']:18.0f}"
    )
    print(f"{'ours: steady_train_images_per_s that fit reports':58s} {'':8s} {median['ours_reported']:18.0f}")
    print(
        f"{'ratio ours / plain':58s} {median['ours'] / median['plain']:7.2f}x "
        f"{median['ours_loop'] / median['plain_loop']:17.2f}x"
    )
    if ceiling:
        print(f"{'model step alone, batches in memory, NCHW (no loading)':58s} {ceiling[False]:8.0f}")
        print(f"{'model step alone, batches in memory, channels_last':58s} {ceiling[True]:8.0f}")
    print(f"\n{'seconds':58s} {'':8s}")
    print(f"{'ours: cache build, cold (decode every file)':58s} {cache_cold:8.3f}")
    print(f"{'ours: cache build, warm (the file exists)':58s} {cache_warm:8.3f}")
    print(f"{'plain: whole call (model, loader, all epochs)':58s} {median['plain_wall']:8.1f}")
    print(f"{'ours: whole fit_manifest call (warm cache, validation incl.)':58s} {median['ours_wall']:8.1f}")
    print(f"{'ours: end to end, cold cache + fit_manifest':58s} {cache_cold + median['ours_wall']:8.1f}")
    busiest = max(plain_watch.shares + our_watch.shares, default=0.0)
    if busiest > 0.1:
        print(
            f"warning: other processes used up to {busiest:.0%} of the CPU during a loop; "
            "the figures are not comparable"
        )
    print(f"ratio ours/plain = {median['ours'] / median['plain']:.2f}x")


if __name__ == "__main__":
    main()
