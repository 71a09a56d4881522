"""`imgclf train`, `lr-find` and `digits`: training outside ZenML with the pipeline's code."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from imgclf.commands.inputs import policy, prepare, settings


def train(args: argparse.Namespace) -> int:
    """Ingest -> per-file checks -> split -> fit -> bundle, outside ZenML, with the pipeline's code."""
    from imgclf.data.split import SplitConfig
    from imgclf.train.config import TrainConfig
    from imgclf.train.loop import fit_manifest

    flags = {
        "arch": args.arch,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "lr": args.lr,
        "pretrained": args.pretrained,
        "weights_file": args.weights_file,
        "transfer": args.transfer,
        "freeze_epochs": args.freeze_epochs,
        "seed": args.seed,
        "num_workers": args.workers,
        "early_stopping_patience": args.patience,
        "ema_decay": args.ema_decay,
    }
    config = TrainConfig(**settings(args.config, flags))
    out = Path(args.out)
    main_rank = os.environ.get("RANK", "0") == "0"
    split = SplitConfig(seed=config.seed)
    prepared = prepare(args.data, split, report=main_rank)
    trained = fit_manifest(
        prepared.manifest,
        config,
        policy(args.augment),
        checkpoint_dir=out / "checkpoints",
        tensorboard_dir=out / "tensorboard",
    )
    local = Path(args.data).expanduser()  # recorded, so export/prune/distill find the data without --data
    trained.info.update(
        data_source=str(local.resolve()) if local.exists() else args.data, split_config=split.model_dump()
    )
    if main_rank:
        trained.save(out)
        info = trained.info
        print(f"best val score {info['best_val_score']:.4f} (epoch {info['best_epoch']}); bundle in {out}")
        print(f"steady-state training throughput: {info['steady_train_images_per_s']:.1f} images/s")
    return 0


def lr_find(args: argparse.Namespace) -> int:
    from imgclf.train.lr_finder import run_lr_find

    result = run_lr_find(
        args.data,
        args.arch,
        args.image_size,
        args.batch_size,
        args.out,
        pretrained=args.pretrained,
        num_steps=args.num_steps,
    )
    stop = f", diverged at {result.diverged_lr:.2e}" if result.diverged_lr is not None else ""
    swept = f"swept {result.lrs[0]:.0e}..{result.lrs[-1]:.2e}{stop}"
    print(f"suggested lr {result.suggested_lr:.2e} ({result.method}; {swept})")
    print(f"plot: {args.out}")
    return 0


def digits(args: argparse.Namespace) -> int:
    from imgclf.data.digits import write_digits

    count = write_digits(args.out, limit_per_class=args.limit_per_class or None)
    print(f"{count} digit images in {args.out}")
    return 0
