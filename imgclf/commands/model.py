"""`imgclf export`, `prune` and `distill`: a trained bundle in every format, or made smaller."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from imgclf.commands.inputs import model_split, policy, settings


def compress_inputs(args: argparse.Namespace, config_type, flags: dict):
    """(bundle, split, config, policy) for prune/distill: --config YAML overridden by flags; the split
    is the bundle's own unless --data / --split-seed say otherwise."""
    from imgclf.models.trained import TrainedModel

    config = config_type(**settings(args.config, flags))
    trained = TrainedModel.load(args.model)
    command = args.func.__name__.strip("_")
    split = model_split(trained, args.data, args.split_seed, command, "it fine-tunes and measures on them")
    return trained, split, config, policy(args.augment)


def write_report(out: Path, name: str, config, report) -> Path:
    path = out / name
    path.write_text(json.dumps({"config": config.model_dump(), "report": report.to_dict()}, indent=2))
    return path


def prune(args: argparse.Namespace) -> int:
    from imgclf.compress.prune import PruneConfig, prune_and_finetune

    trained, split, config, policy = compress_inputs(
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
    print(f"bundle in {out}; report in {write_report(out, 'prune_report.json', config, report)}")
    return 0


def distill(args: argparse.Namespace) -> int:
    from imgclf.compress.distill import DistillConfig, distill

    teacher, split, config, policy = compress_inputs(
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
    print(f"student bundle in {out}; report in {write_report(out, 'distill_report.json', config, report)}")
    return 0


def export(args: argparse.Namespace) -> int:
    """Bundle -> ONNX fp32, the INT8 recipe that wins on this machine, TorchScript, OpenVINO IR, JSON report."""
    from imgclf.bundle import ONNX_FILE, ONNX_INT8_FILE, SPEC_FILE, set_serving_model
    from imgclf.data.decoded import DecodedSplits
    from imgclf.export.exporter import ExportConfig, ExportImages
    from imgclf.export.folder import export_folder
    from imgclf.export.int8_report import RECIPES_FILE
    from imgclf.export.runtimes import ORT_FP32, runtime_table
    from imgclf.models.trained import TrainedModel

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
    split = model_split(trained, args.data, None, "export", need)
    try:
        data = DecodedSplits(split, trained.preprocess, trained.class_names)
    except ValueError as exc:
        raise SystemExit(f"imgclf export: {args.data}: {exc} (the model in {args.model_dir})") from None
    flags = {"tolerance": args.tolerance, "min_speedup": args.min_speedup}
    config = ExportConfig(**{k: v for k, v in flags.items() if v is not None})
    out = Path(args.out)
    report = export_folder(trained, out, ExportImages.from_splits(data), config)
    if (out / SPEC_FILE).is_file():  # exported into the bundle itself: it now serves what the export chose
        set_serving_model(out, ONNX_INT8_FILE if report.checked.serve == "int8" else ONNX_FILE)
    print((out / RECIPES_FILE).read_text())
    print(runtime_table(report.runtimes, ORT_FP32))
    if report.openvino_skipped is not None:
        print(report.openvino_skipped)
    print(f"\n{report.checked.int8_summary}\nwrote {', '.join(report.files)} to {out}")
    return 0
