"""Training throughput on a GPU at 224 px: imgclf's loop (fit_manifest: the decoded cache, CacheLoader,
channels_last, bf16 autocast, optionally torch.compile) against the plain PyTorch loop a user writes
(ImageFolder + PIL transforms + DataLoader, fp32, NCHW), same GPU, same files, same run, for resnet50
and tf_efficientnet_lite0 from scratch. It reuses bench/train_throughput.py's loops and timing (see its
docstring for what is timed); only the device, the size and the models differ.

    source infra/env.sh && python bench/gpu_train.py                     # skips without CUDA
    python bench/gpu_train.py --archs resnet50 --images 4096 --epochs 2 --compile
    python bench/gpu_train.py --device cpu --archs resnet18 --images 64 --epochs 1 --image-size 32  # smoke run

This is a measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from common import image_folder, scratch_dir
from train_throughput import EpochLog, our_loop, plain_loop, train_manifest


def measure(arch: str, manifest, root, args) -> tuple[float, float, float]:
    """(plain, ours, ours with torch.compile or 0.0) steady training images/s for one architecture."""
    args.arch = arch
    plain_log, our_log = EpochLog(), EpochLog()
    plain_loop(root, args, plain_log, device=args.device)
    our_loop(manifest, args, our_log)
    compiled = 0.0
    if args.compile:
        compiled_log = EpochLog()
        our_loop(manifest, args, compiled_log, compile=True)
        compiled = compiled_log.steady(args.warmup)
    return plain_log.steady(args.warmup), our_log.steady(args.warmup), compiled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet50", "tf_efficientnet_lite0"])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=10, help="batches at the start of a loop left out of 'steady'")
    parser.add_argument("--compile", action="store_true", help="also time ours with torch.compile")
    parser.add_argument("--device", default="cuda", help="cuda (the point of it), or cpu for a smoke run")
    parser.add_argument("--data", type=Path, default=None, help="reuse or create the image folder here")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA device on this machine (bench/train_throughput.py measures the CPU)")
        return 0
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (smoke run)"
    with scratch_dir("imgclf-gpu-bench-") as scratch:
        root = image_folder(args.data, scratch, args.images)
        os.environ["IMGCLF_CACHE_DIR"] = str(scratch / "cache")
        manifest = train_manifest(root)
        rows = [(arch, *measure(arch, manifest, root, args)) for arch in args.archs]
    print(f"\n{where}, {args.images} files -> {args.image_size} px, batch {args.batch_size}, {args.epochs} epochs")
    print("| model | plain loop images/s | imgclf loop images/s | ratio | with torch.compile |")
    print("|---|---|---|---|---|")
    for arch, plain, ours, compiled in rows:
        extra = f"{compiled:.0f} ({compiled / plain:.2f}x)" if compiled else "-"
        print(f"| {arch} | {plain:.0f} | {ours:.0f} | {ours / plain:.2f}x | {extra} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
