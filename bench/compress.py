"""Model compression on the digits: a baseline trained in this run, then (1) the baseline pruned by
--amount and fine-tuned, (2) the baseline distilled into --student, against that student trained
alone with the same config and seed. Every row is measured in this process, and each table ends with
ratios to its first row, because absolute times on a shared machine mislead.

    source infra/env.sh && python bench/compress.py     # resnet18, 32 px, all 1,797 digits; a few minutes on 2 cores
    python bench/compress.py --arch tf_efficientnet_lite0 --pretrained --image-size 64 --amount 0.5

The data are scikit-learn's digits written as PNGs (a folder per class) into a temp dir, checked and
split 70/15/15 as `imgclf train` does; fine-tuning and distillation train on the train split and
select on val, and every accuracy is on the test split. Latency: batch-1 median and batch-32
throughput with preprocessing, torch on the CPU at the loop's thread count. MACs: convs and linears
at one image. The student starts from random weights (no offline ImageNet weights exist for it).
This is a measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

from common import scratch_dir

from imgclf.compress.distill import DistillConfig, distill
from imgclf.compress.prune import PruneConfig, prune_and_finetune
from imgclf.data.digits import write_digits
from imgclf.data.prepare import prepare_data
from imgclf.data.split import SplitConfig
from imgclf.train.config import TrainConfig
from imgclf.train.loop import fit_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18", help="the baseline (and teacher)")
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="start the baseline from ImageNet weights (offline: tf_efficientnet_lite0 only)",
    )
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6, help="baseline training epochs")
    parser.add_argument("--lr", type=float, default=3e-3, help="baseline and student learning rate")
    parser.add_argument("--amount", type=float, default=0.5, help="fraction of channels pruned")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--student", default="mobilenetv3_small_050")
    parser.add_argument("--student-epochs", type=int, default=10)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.7)
    parser.add_argument("--workers", type=int, default=None, help="augmentation worker processes")
    parser.add_argument("--latency-repeats", type=int, default=50)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    with scratch_dir("imgclf-bench-compress-") as scratch:
        count = write_digits(scratch / "digits")
        split = prepare_data(scratch / "digits", SplitConfig(seed=args.seed)).manifest
        sizes = split.records["split"].value_counts().to_dict()
        print(f"digits: {count} images, split {sizes}; {args.arch} at {args.image_size} px, batch {args.batch_size}")

        started = time.perf_counter()
        baseline = fit_manifest(
            split,
            TrainConfig(
                arch=args.arch,
                pretrained=args.pretrained,
                image_size=args.image_size,
                batch_size=args.batch_size,
                epochs=args.epochs,
                lr=args.lr,
                seed=args.seed,
                num_workers=args.workers,
            ),
        )
        print(
            f"baseline: {args.epochs} epochs in {time.perf_counter() - started:.0f} s, "
            f"best val {baseline.info['best_val_score']:.4f}\n"
        )

        started = time.perf_counter()
        _, pruned = prune_and_finetune(
            baseline,
            split,
            PruneConfig(
                amount=args.amount,
                epochs=args.finetune_epochs,
                lr=args.finetune_lr,
                num_workers=args.workers,
                latency_repeats=args.latency_repeats,
            ),
        )
        print(
            f"pruning {args.amount:.0%}, fine-tune {args.finetune_epochs} epochs at lr {args.finetune_lr:g} "
            f"({time.perf_counter() - started:.0f} s)"
        )
        print(pruned.table() + "\n")

        started = time.perf_counter()
        *_, distilled = distill(
            baseline,
            split,
            DistillConfig(
                student=args.student,
                temperature=args.temperature,
                alpha=args.alpha,
                epochs=args.student_epochs,
                lr=args.lr,
                batch_size=args.batch_size,
                seed=args.seed,
                num_workers=args.workers,
                latency_repeats=args.latency_repeats,
            ),
        )
        print(
            f"distillation T={args.temperature:g} alpha={args.alpha:g}, {args.student_epochs} epochs each "
            f"({time.perf_counter() - started:.0f} s)"
        )
        print(distilled.table())


if __name__ == "__main__":
    main()
