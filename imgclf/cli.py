"""The `imgclf` command: the pipeline's code outside ZenML (train, lr-find, export, prune, distill), serving,
the default data set, the registry (promote, rollback, stages, summary) and the active-learning queue. This
module builds the parser; the commands live in `imgclf.commands`."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from imgclf.bundle import BundleError
from imgclf.commands import model, queue, registry, serve, train
from imgclf.data.archive import ArchiveError
from imgclf.data.cache import CacheBuildError
from imgclf.data.ingest import DataSourceError
from imgclf.stages import StageSyncError


def _compress_arguments(p: argparse.ArgumentParser, model_help: str) -> None:
    p.add_argument("model", help=model_help)
    p.add_argument(
        "--data",
        help="the data the model was trained on (folder, manifest, archive or URL); "
        "default: the source the bundle records",
    )
    p.add_argument("--out", required=True, help="bundle folder for the result (the JSON report goes inside)")
    p.add_argument(
        "--split-seed", type=int, help="split seed (default: the model's training seed, as imgclf train splits)"
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--workers", type=int, help="augmentation worker processes")
    p.add_argument("--latency-repeats", type=int, help="batch-1 timed calls per model")
    p.add_argument("--augment", help="YAML of AugmentPolicy fields")


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP with BentoML")
    p.add_argument(
        "--model",
        help="bundle folder, .onnx file or models:/NAME/VERSION|latest or models:/NAME@ALIAS; default: the "
        "version that holds production, else staging, else the latest",
    )
    p.add_argument("--model-name", default="image-classifier", help="the registered model the default comes from")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=serve.serve)


def _add_digits(sub) -> None:
    p = sub.add_parser("digits", help="write scikit-learn's digits as PNGs, a folder per class")
    p.add_argument("out", nargs="?", default="data/digits")
    p.add_argument("--limit-per-class", type=int, default=0, help="0 = all images")
    p.set_defaults(func=train.digits)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model outside ZenML with the pipeline's loop; writes a bundle")
    p.add_argument("data", help="folder per class, split folder, CSV/JSON manifest, archive or URL")
    p.add_argument("--out", required=True, help="bundle folder (checkpoints and TensorBoard logs go inside)")
    p.add_argument("--arch")
    p.add_argument("--image-size", help="px, or auto (default): from the source resolution")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--epochs", help="a number, or auto (default): by the number of training images")
    p.add_argument("--lr", help="a number (default 0.002), or find: the LR finder's suggestion")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--weights-file")
    p.add_argument("--transfer", choices=["full", "linear_probe", "freeze_then_unfreeze"])
    p.add_argument("--freeze-epochs", type=int)
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (default 5)")
    p.add_argument("--ema-decay", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="augmentation worker processes")
    p.add_argument("--config", help="YAML of TrainConfig fields (flags override it)")
    p.add_argument("--augment", help="YAML of AugmentPolicy fields")
    p.set_defaults(func=train.train)


def _add_lr_find(sub) -> None:
    p = sub.add_parser(
        "lr-find", help="LR range test (fastai style): suggest a learning rate and save the loss-vs-LR plot"
    )
    p.add_argument(
        "data",
        nargs="?",
        default="data/digits",
        help="folder per class, split folder, CSV/JSON manifest, archive or URL",
    )
    p.add_argument("--arch", default="tf_efficientnet_lite0", help="timm name or torchvision/<name>")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--num-steps", type=int, default=100, help="mini-batches in the sweep (stops early if the loss diverges)"
    )
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="start from random weights")
    p.add_argument("--out", default="lr_find.png", help="where to save the plot (PNG)")
    p.set_defaults(func=train.lr_find)


def _add_prune(sub) -> None:
    p = sub.add_parser("prune", help="remove the lowest-L1 channels of a bundle, fine-tune, and report before/after")
    _compress_arguments(p, "bundle folder of the trained model")
    p.add_argument("--amount", type=float, help="fraction of channels removed (default 0.3)")
    p.add_argument("--ignore", action="append", help="module-name pattern whose output channels are kept (repeatable)")
    p.add_argument("--round-to", type=int, help="keep channel counts multiples of this")
    p.add_argument("--config", help="YAML of PruneConfig fields (flags override it)")
    p.set_defaults(func=model.prune)


def _add_distill(sub) -> None:
    p = sub.add_parser("distill", help="train a small student from a teacher bundle (and alone, to compare)")
    _compress_arguments(p, "bundle folder of the teacher")
    p.add_argument("--student", help="timm name or torchvision/<name> (default mobilenetv3_small_050, random init)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--alpha", type=float, help="weight of the teacher's soft targets (0..1)")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also train the student alone (default on)",
    )
    p.add_argument("--config", help="YAML of DistillConfig fields (flags override it)")
    p.set_defaults(func=model.distill)


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a bundle to ONNX, INT8 (recipe chosen by measurement), TorchScript and "
        "OpenVINO, with a parity and latency report",
    )
    p.add_argument("model_dir", help="bundle folder written by imgclf train")
    p.add_argument("--out", required=True, help="folder for the exported files and export_report.json")
    p.add_argument(
        "--data",
        help="the images the model was trained on: a train sample calibrates INT8, val chooses the "
        "recipe, test reports parity (default: the source the bundle records)",
    )
    p.add_argument("--tolerance", type=float, help="largest accuracy drop an INT8 recipe may have (default 0.01)")
    p.add_argument(
        "--min-speedup",
        type=float,
        help="INT8 must be at least this much faster than ORT fp32 at batch 32 (default 1.05)",
    )
    p.set_defaults(func=model.export)


def _add_registry_commands(sub) -> None:
    p = sub.add_parser(
        "promote",
        help="move VERSION into staging or production by the promotion rules (scored beside the current holder)",
    )
    p.add_argument("version", help="the registered version number (production takes only the staging holder)")
    p.add_argument("--to", required=True, choices=["staging", "production"])
    p.add_argument("--expect", help="the version you expect to replace (none: an empty stage); refused otherwise")
    p.add_argument("--data-root", help="where the version's test images are, when not where it was trained")
    p.add_argument("--model-name", default="image-classifier")
    p.set_defaults(func=registry.promote)
    p = sub.add_parser("rollback", help="give a stage back to its previous holder, from the audit trail")
    p.add_argument("stage", choices=["staging", "production"])
    p.add_argument("--reason", default="", help="why (recorded in the audit trail)")
    p.add_argument("--model-name", default="image-classifier")
    p.set_defaults(func=registry.rollback)
    p = sub.add_parser("stages", help="who holds staging and production, since when, by whom, with what figures")
    p.add_argument("--holder", choices=["staging", "production"], help="print only this stage's version")
    p.add_argument("--sync", action="store_true", help="make ZenML's model stages equal to the MLflow aliases")
    p.add_argument("--model-name", default="image-classifier")
    p.set_defaults(func=registry.stages)
    p = sub.add_parser("fetch", help="download a registered version's bundle folder (e.g. to bake a serving image)")
    p.add_argument("version", help="the registered version number")
    p.add_argument("--out", required=True, help="an empty or new folder; the bundle is written into it")
    p.add_argument("--model-name", default="image-classifier")
    p.set_defaults(func=registry.fetch)
    p = sub.add_parser("summary", help="print the latest registered model and where to look")
    p.add_argument("--model-name", default="image-classifier")
    p.add_argument("--markdown", action="store_true", help="Markdown for a CI job summary")
    p.set_defaults(func=registry.summary)


COMMANDS = (
    _add_serve,
    _add_digits,
    _add_train,
    _add_lr_find,
    _add_prune,
    _add_distill,
    _add_export,
    _add_registry_commands,
    queue.add_parser,
)


def main(argv: list[str] | None = None) -> int:
    import logging

    from imgclf.logs import quiet_third_party

    parser = argparse.ArgumentParser(prog="imgclf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:  # progress and results as plain lines (a host app's logging is left alone)
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_third_party()
    try:
        return args.func(args)
    except (DataSourceError, ArchiveError, CacheBuildError, BundleError) as exc:  # data or bundle unusable: say which
        raise SystemExit(f"imgclf {args.command}: {exc}") from None
    except ValidationError as exc:  # a flag or --config value the settings refuse: pydantic names the key
        raise SystemExit(f"imgclf {args.command}: {exc}") from None
    except (LookupError, StageSyncError) as exc:  # a version that does not exist; ZenML that did not follow
        raise SystemExit(f"imgclf {args.command}: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
