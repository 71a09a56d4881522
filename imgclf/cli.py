"""The `imgclf` command: the pipeline's code outside ZenML (train, lr-find, export, prune, distill), serving,
the default data set, and the registry (promote, summary)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from imgclf import paths


def resolve_model(model: str) -> tuple[Path, str]:
    """A models:/ URI (downloaded from the MLflow registry) or a local bundle folder / .onnx file."""
    if model.startswith("models:/"):
        from imgclf.registry import fetch_bundle, resolve_version

        name, version = resolve_version(model)
        return fetch_bundle(f"models:/{name}/{version}", paths.deployments_dir() / f"{name}-v{version}")
    path = Path(model)
    if not path.exists():
        raise SystemExit(f"imgclf serve: {path} does not exist (give a bundle folder, an .onnx file or a models:/ URI)")
    return path, "local"


def _serve(args: argparse.Namespace) -> int:
    model_dir, version = resolve_model(args.model)
    _check_servable(model_dir)
    from imgclf.serving.deployment import serve_command

    cmd, env = serve_command(model_dir, version, args.host, args.port)
    print(f"serving {args.model} (version {version}) from {model_dir} on http://{args.host}:{args.port}", flush=True)
    return subprocess.call(cmd, env=env)


def _check_servable(model: Path) -> None:
    """The service runs an ONNX file; without one BentoML's worker would fail and restart over and over."""
    from imgclf.bundle import serving_model

    onnx = model / serving_model(model) if model.is_dir() else model
    if onnx.suffix != ".onnx" or not onnx.is_file():
        raise SystemExit(
            f"imgclf serve: {model} holds no {onnx.name} to serve: the service runs ONNX, and a bundle from "
            f"`imgclf train` holds torch weights only. Export it first: imgclf export {model} --out {model}"
        )


def _prepare(data: str, split, report: bool = True):
    """Ingest -> per-file checks -> split: the data every command outside ZenML works on."""
    from imgclf.data.prepare import prepare_data

    prepared = prepare_data(data, split)
    if report and prepared.describe_skipped():
        print(prepared.describe_skipped())
    return prepared


def _model_split(trained, data: str | None, split_seed: int | None, command: str, need: str):
    """The split `trained` was trained on: `data`, else the source its bundle records, split by the
    recorded split config (else by its training seed, as `imgclf train` splits); `split_seed` overrides
    the seed. Without a source, the error says what the command needs the images for."""
    from imgclf.data.split import SplitConfig

    source = data or trained.info.get("data_source")
    if not source:
        raise SystemExit(
            f"imgclf {command}: {need}: pass --data with the images the model was trained on "
            "(the bundle records no data source; `imgclf train` records one)"
        )
    recorded = trained.info.get("split_config")
    split = SplitConfig(**recorded) if recorded else SplitConfig(seed=trained.info.get("train_config", {}).get("seed", 42))
    if split_seed is not None:
        split = split.model_copy(update={"seed": split_seed})
    return _prepare(source, split).manifest


def _settings(config_file: str | None, flags: dict) -> dict:
    """A config's fields: the YAML file's (if any), overridden by the flags that were given."""
    import yaml

    settings = yaml.safe_load(Path(config_file).read_text()) if config_file else {}
    settings.update({k: v for k, v in flags.items() if v is not None})
    return settings


def _policy(augment_file: str | None):
    from imgclf.augment.policy import AugmentPolicy

    return AugmentPolicy(**_settings(augment_file, {}))


def _train(args: argparse.Namespace) -> int:
    """Ingest -> per-file checks -> split -> fit -> bundle, outside ZenML, with the pipeline's code."""
    import os

    from imgclf.data.split import SplitConfig
    from imgclf.train.config import TrainConfig
    from imgclf.train.loop import fit_manifest

    flags = {
        "arch": args.arch, "image_size": args.image_size, "batch_size": args.batch_size, "epochs": args.epochs,
        "lr": args.lr, "pretrained": args.pretrained, "weights_file": args.weights_file, "transfer": args.transfer,
        "freeze_epochs": args.freeze_epochs, "seed": args.seed, "num_workers": args.workers,
        "early_stopping_patience": args.patience, "ema_decay": args.ema_decay,
    }
    config = TrainConfig(**_settings(args.config, flags))
    out = Path(args.out)
    main_rank = os.environ.get("RANK", "0") == "0"
    split = SplitConfig(seed=config.seed)
    prepared = _prepare(args.data, split, report=main_rank)
    trained = fit_manifest(
        prepared.manifest, config, _policy(args.augment), checkpoint_dir=out / "checkpoints", tensorboard_dir=out / "tensorboard"
    )
    local = Path(args.data).expanduser()  # recorded, so export/prune/distill find the data without --data
    trained.info.update(data_source=str(local.resolve()) if local.exists() else args.data, split_config=split.model_dump())
    if main_rank:
        trained.save(out)
        info = trained.info
        print(f"best val score {info['best_val_score']:.4f} (epoch {info['best_epoch']}); bundle in {out}")
        print(f"steady-state training throughput: {info['steady_train_images_per_s']:.1f} images/s")
    return 0


def _compress_inputs(args: argparse.Namespace, config_type, flags: dict):
    """(bundle, split, config, policy) for prune/distill: --config YAML overridden by flags; the split
    is the bundle's own unless --data / --split-seed say otherwise."""
    from imgclf.models.trained import TrainedModel

    config = config_type(**_settings(args.config, flags))
    trained = TrainedModel.load(args.model)
    command = args.func.__name__.strip("_")
    split = _model_split(trained, args.data, args.split_seed, command, "it fine-tunes and measures on them")
    return trained, split, config, _policy(args.augment)


def _write_report(out: Path, name: str, config, report) -> Path:
    import json

    path = out / name
    path.write_text(json.dumps({"config": config.model_dump(), "report": report.to_dict()}, indent=2))
    return path


def _prune(args: argparse.Namespace) -> int:
    from imgclf.compress.prune import PruneConfig, prune_and_finetune

    trained, split, config, policy = _compress_inputs(
        args,
        PruneConfig,
        {
            "amount": args.amount,
            "epochs": args.epochs,
            "lr": args.lr,
            "ignore": args.ignore,
            "round_to": args.round_to,
            "batch_size": args.batch_size,
            "num_workers": args.workers,
            "latency_repeats": args.latency_repeats,
        },
    )
    pruned, report = prune_and_finetune(trained, split, config, policy)
    out = Path(args.out)
    pruned.save(out)
    print(report.table())
    if report.data_matches_training is False:
        print(
            f"warning: {args.data} is not the data {args.model} was trained on; its test split may hold training images"
        )
    print(f"bundle in {out}; report in {_write_report(out, 'prune_report.json', config, report)}")
    return 0


def _distill(args: argparse.Namespace) -> int:
    from imgclf.compress.distill import DistillConfig, distill

    teacher, split, config, policy = _compress_inputs(
        args,
        DistillConfig,
        {
            "student": args.student,
            "epochs": args.epochs,
            "temperature": args.temperature,
            "alpha": args.alpha,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "num_workers": args.workers,
            "baseline": args.baseline,
            "latency_repeats": args.latency_repeats,
        },
    )
    student, _, report = distill(teacher, split, config, policy)
    out = Path(args.out)
    student.save(out)
    print(report.table())
    print(f"student bundle in {out}; report in {_write_report(out, 'distill_report.json', config, report)}")
    return 0


def _compress_arguments(p: argparse.ArgumentParser, model_help: str) -> None:
    p.add_argument("model", help=model_help)
    p.add_argument("--data", help="the data the model was trained on (folder, manifest, archive or URL); default: the source the bundle records")
    p.add_argument("--out", required=True, help="bundle folder for the result (the JSON report goes inside)")
    p.add_argument("--split-seed", type=int, help="split seed (default: the model's training seed, as imgclf train splits)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--workers", type=int, help="augmentation worker processes")
    p.add_argument("--latency-repeats", type=int, help="batch-1 timed calls per model")
    p.add_argument("--augment", help="YAML of AugmentPolicy fields")


def _export(args: argparse.Namespace) -> int:
    """Bundle -> ONNX fp32, the INT8 recipe that wins on this machine, TorchScript, OpenVINO IR, JSON report."""
    import logging

    from imgclf.data.decoded import DecodedSplits
    from imgclf.export.exporter import ExportConfig, calibration_sample
    from imgclf.export.folder import export_folder
    from imgclf.export.int8_report import RECIPES_FILE
    from imgclf.export.runtimes import ORT_FP32, runtime_table
    from imgclf.logs import quiet_third_party
    from imgclf.models.trained import TrainedModel

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_third_party()
    try:
        trained = TrainedModel.load(args.model_dir)
    except FileNotFoundError as exc:
        raise SystemExit(f"imgclf export: {exc}") from None
    if trained.info.get("multi_label"):
        raise SystemExit(
            f"imgclf export: {args.model_dir} is a multi-label model; "
            "the export checks compare top-1 accuracy, single-label only"
        )
    need = (
        "INT8 calibration needs images (a sample of the train split calibrates INT8, the val split chooses "
        "the recipe and checks every export)"
    )
    split = _model_split(trained, args.data, None, "export", need)
    try:
        data = DecodedSplits(split, trained.preprocess, trained.class_names)
    except ValueError as exc:
        raise SystemExit(f"imgclf export: {args.data}: {exc} (the model in {args.model_dir})") from None
    flags = {"tolerance": args.tolerance, "min_speedup": args.min_speedup}
    config = ExportConfig(**{k: v for k, v in flags.items() if v is not None})
    out = Path(args.out)
    report = export_folder(
        trained,
        out,
        calibration_sample(data.train.images),
        data.val.images,
        data.val.targets,
        config,
        test_images=data.test.images,
        test_labels=data.test.targets,
    )
    print((out / RECIPES_FILE).read_text())
    print(runtime_table(report.runtimes, ORT_FP32))
    if report.openvino_skipped is not None:
        print(report.openvino_skipped)
    print(f"\n{report.checked.int8_summary}\nwrote {', '.join(report.files)} to {out}")
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
    from imgclf.data.digits import write_digits

    count = write_digits(args.out, limit_per_class=args.limit_per_class or None)
    print(f"{count} digit images in {args.out}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    """Point a registry alias at a version: the next pipeline run compares its new model with it."""
    from imgclf.registry import resolve_version, set_alias

    name, version = resolve_version(args.model)
    previous = set_alias(name, version, args.alias)
    print(f"models:/{name}@{args.alias} -> version {version}" + (f" (was {previous})" if previous else " (new alias)"))
    return 0


def _summary(args: argparse.Namespace) -> int:
    """The latest registered version, its headline metrics, and where its report and card are."""
    from imgclf import registry

    found = registry.version_info(args.model_name)
    print(f"\nRegistered models:/{found.name}/{found.version}  (MLflow run {found.run_id})")
    for key in ("test_accuracy", "test_macro_f1"):
        if key in found.tags:
            print(f"  {key} = {found.tags[key]}")
    reports = paths.reports_dir() / f"{found.name}-v{found.version}"
    for label, artifact in (("Evaluation report", "evaluation/report.html"), ("Model card", "model_card.md")):
        local = registry.download_run_file(found.run_id, artifact, reports)
        print(f"{label}: {local}" if local else f"{label}: not logged by run {found.run_id}")
    print(f"MLflow UI:      mlflow ui --backend-store-uri {registry.tracking_uri()}")
    print("ZenML dashboard: zenml login --local   (runs, artifacts and visualisations)")
    print(f"Serve it:       make serve   (or: imgclf serve --model models:/{found.name}/{found.version})")
    return 0


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP with BentoML")
    p.add_argument("--model", default="models:/image-classifier/latest",
                   help="bundle folder, .onnx file or models:/NAME/VERSION|latest or models:/NAME@ALIAS")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=_serve)


def _add_digits(sub) -> None:
    p = sub.add_parser("digits", help="write scikit-learn's digits as PNGs, a folder per class")
    p.add_argument("out", nargs="?", default="data/digits")
    p.add_argument("--limit-per-class", type=int, default=0, help="0 = all images")
    p.set_defaults(func=_digits)


def _add_train(sub) -> None:
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


def _add_lr_find(sub) -> None:
    p = sub.add_parser("lr-find", help="LR range test (fastai style): suggest a learning rate and save the loss-vs-LR plot")
    p.add_argument("data", nargs="?", default="data/digits", help="folder per class, split folder, CSV/JSON manifest, archive or URL")
    p.add_argument("--arch", default="tf_efficientnet_lite0", help="timm name or torchvision/<name>")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-steps", type=int, default=100, help="mini-batches in the sweep (stops early if the loss diverges)")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="start from random weights")
    p.add_argument("--out", default="lr_find.png", help="where to save the plot (PNG)")
    p.set_defaults(func=_lr_find)


def _add_prune(sub) -> None:
    p = sub.add_parser("prune", help="remove the lowest-L1 channels of a bundle, fine-tune, and report before/after")
    _compress_arguments(p, "bundle folder of the trained model")
    p.add_argument("--amount", type=float, help="fraction of channels removed (default 0.3)")
    p.add_argument("--ignore", action="append", help="module-name pattern whose output channels are kept (repeatable)")
    p.add_argument("--round-to", type=int, help="keep channel counts multiples of this")
    p.add_argument("--config", help="YAML of PruneConfig fields (flags override it)")
    p.set_defaults(func=_prune)


def _add_distill(sub) -> None:
    p = sub.add_parser("distill", help="train a small student from a teacher bundle (and alone, to compare)")
    _compress_arguments(p, "bundle folder of the teacher")
    p.add_argument("--student", help="timm name or torchvision/<name> (default mobilenetv3_small_050, random init)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--alpha", type=float, help="weight of the teacher's soft targets (0..1)")
    p.add_argument("--seed", type=int)
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=None,
                   help="also train the student alone (default on)")
    p.add_argument("--config", help="YAML of DistillConfig fields (flags override it)")
    p.set_defaults(func=_distill)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a bundle to ONNX, INT8 (recipe chosen by measurement), TorchScript and "
                       "OpenVINO, with a parity and latency report")
    p.add_argument("model_dir", help="bundle folder written by imgclf train")
    p.add_argument("--out", required=True, help="folder for the exported files and export_report.json")
    p.add_argument("--data", help="the images the model was trained on: a train sample calibrates INT8, val chooses the "
                   "recipe, test reports parity (default: the source the bundle records)")
    p.add_argument("--tolerance", type=float, help="largest accuracy drop an INT8 recipe may have (default 0.01)")
    p.add_argument("--min-speedup", type=float,
                   help="INT8 must be at least this much faster than ORT fp32 at batch 32 (default 1.05)")
    p.set_defaults(func=_export)


def _add_registry_commands(sub) -> None:
    p = sub.add_parser("promote", help="point a registry alias (default: production) at a version; evaluate compares new "
                       "models with it")
    p.add_argument("model", help="models:/NAME/VERSION, models:/NAME/latest or models:/NAME@ALIAS")
    p.add_argument("--alias", default="production")
    p.set_defaults(func=_promote)
    p = sub.add_parser("summary", help="print the latest registered model and where to look")
    p.add_argument("--model-name", default="image-classifier")
    p.set_defaults(func=_summary)


COMMANDS = (_add_serve, _add_digits, _add_train, _add_lr_find, _add_prune, _add_distill, _add_export, _add_registry_commands)


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
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
