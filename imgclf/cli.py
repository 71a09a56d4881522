"""The `imgclf` command: write the default data set, serve a model, summarise the last run."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def resolve_model(model: str) -> tuple[Path, str]:
    """A models:/ URI (downloaded from the MLflow registry) or a local bundle folder / .onnx file."""
    if model.startswith("models:/"):
        from imgclf.registry import fetch_bundle, resolve_version
        from imgclf.serving.deployment import deployments_dir

        name, version = resolve_version(model)
        return fetch_bundle(f"models:/{name}/{version}", deployments_dir() / f"{name}-v{version}")
    path = Path(model)
    if not path.exists():
        raise SystemExit(f"imgclf serve: {path} does not exist (give a bundle folder, an .onnx file or a models:/ URI)")
    return path, "local"


def _serve(args: argparse.Namespace) -> int:
    model_dir, version = resolve_model(args.model)
    from imgclf.serving.deployment import serve_command

    cmd, env = serve_command(model_dir, version, args.host, args.port)
    print(f"serving {args.model} (version {version}) from {model_dir} on http://{args.host}:{args.port}", flush=True)
    return subprocess.call(cmd, env=env)


def _train(args: argparse.Namespace) -> int:
    """Ingest -> per-file checks -> split -> fit -> bundle, outside ZenML, with the pipeline's code."""
    import logging
    import os

    import yaml

    from imgclf.augment import AugmentPolicy
    from imgclf.data.sources import load_source
    from imgclf.data.split import SplitConfig, split_usable
    from imgclf.train.config import TrainConfig
    from imgclf.train.loop import fit_manifest

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = yaml.safe_load(Path(args.config).read_text()) if args.config else {}
    settings.update({k: v for k, v in {
        "arch": args.arch, "image_size": args.image_size, "batch_size": args.batch_size, "epochs": args.epochs,
        "lr": args.lr, "pretrained": args.pretrained, "weights_file": args.weights_file, "transfer": args.transfer,
        "freeze_epochs": args.freeze_epochs, "seed": args.seed, "num_workers": args.workers,
        "early_stopping_patience": args.patience, "ema_decay": args.ema_decay,
    }.items() if v is not None})
    config = TrainConfig(**settings)
    policy = AugmentPolicy(**(yaml.safe_load(Path(args.augment).read_text()) if args.augment else {}))
    out = Path(args.out)
    main_rank = os.environ.get("RANK", "0") == "0"

    manifest = load_source(args.data)
    split, skipped = split_usable(manifest, SplitConfig(seed=config.seed))
    if main_rank and skipped:
        print(f"skipped {sum(skipped.values())} of {len(manifest)} files: {skipped}")
    trained = fit_manifest(split, config, policy, checkpoint_dir=out / "checkpoints", tensorboard_dir=out / "tensorboard")
    if main_rank:
        trained.save(out)
        info = trained.info
        print(f"best val score {info['best_val_score']:.4f} (epoch {info['best_epoch']}); bundle in {out}")
        print(f"steady-state training throughput: {info['steady_train_images_per_s']:.1f} images/s")
    return 0


def _lr_find(args: argparse.Namespace) -> int:
    from imgclf.train.lr_finder import run_lr_find

    result = run_lr_find(
        args.data, args.arch, args.image_size, args.batch_size, args.out, pretrained=args.pretrained, num_steps=args.num_steps
    )
    stop = f", diverged at {result.diverged_lr:.2e}" if result.diverged_lr is not None else ""
    print(f"suggested lr {result.suggested_lr:.2e} ({result.method}; swept {result.lrs[0]:.0e}..{result.lrs[-1]:.2e}{stop})")
    print(f"plot: {args.out}")
    return 0


def _digits(args: argparse.Namespace) -> int:
    from imgclf.datasets import write_digits

    count = write_digits(args.out, limit_per_class=args.limit_per_class or None)
    print(f"{count} digit images in {args.out}")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from imgclf.registry import latest_version

    import mlflow

    uri = mlflow.get_tracking_uri()
    version = latest_version(args.model_name)
    mv = mlflow.MlflowClient().get_model_version(args.model_name, version)
    print(f"\nRegistered models:/{args.model_name}/{version}  (MLflow run {mv.run_id})")
    for key in ("test_accuracy", "test_macro_f1"):
        if key in mv.tags:
            print(f"  {key} = {mv.tags[key]}")
    print(f"MLflow UI:      mlflow ui --backend-store-uri {uri}")
    print("ZenML dashboard: zenml login --local   (runs, artifacts and visualisations)")
    print(f"Serve it:       make serve   (or: imgclf serve --model models:/{args.model_name}/{version})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imgclf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve a model over HTTP with BentoML")
    p.add_argument("--model", default="models:/image-classifier/latest", help="bundle folder, .onnx file or models:/NAME/VERSION|latest or models:/NAME@ALIAS")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=_serve)

    p = sub.add_parser("digits", help="write scikit-learn's digits as PNGs, a folder per class")
    p.add_argument("out", nargs="?", default="data/digits")
    p.add_argument("--limit-per-class", type=int, default=0, help="0 = all images")
    p.set_defaults(func=_digits)

    p = sub.add_parser("train", help="train a model outside ZenML with the pipeline's loop; writes a bundle")
    p.add_argument("data", help="folder per class, split folder, CSV/JSON manifest, archive or URL")
    p.add_argument("--out", required=True, help="bundle folder (checkpoints and TensorBoard logs go inside)")
    p.add_argument("--arch")
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--weights-file")
    p.add_argument("--transfer", choices=["full", "linear_probe", "freeze_then_unfreeze"])
    p.add_argument("--freeze-epochs", type=int)
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    p.add_argument("--ema-decay", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="augmentation worker processes")
    p.add_argument("--config", help="YAML of TrainConfig fields (flags override it)")
    p.add_argument("--augment", help="YAML of AugmentPolicy fields")
    p.set_defaults(func=_train)

    p = sub.add_parser("lr-find", help="LR range test (fastai style): suggest a learning rate and save the loss-vs-LR plot")
    p.add_argument("data", nargs="?", default="data/digits", help="folder per class, split folder, CSV/JSON manifest, archive or URL")
    p.add_argument("--arch", default="tf_efficientnet_lite0", help="timm name or torchvision/<name>")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-steps", type=int, default=100, help="mini-batches in the sweep (stops early if the loss diverges)")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="start from random weights")
    p.add_argument("--out", default="lr_find.png", help="where to save the plot (PNG)")
    p.set_defaults(func=_lr_find)

    p = sub.add_parser("summary", help="print the latest registered model and where to look")
    p.add_argument("--model-name", default="image-classifier")
    p.set_defaults(func=_summary)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
