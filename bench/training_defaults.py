"""The old training defaults against the new data-adaptive ones, on three offline data sets of
different kinds: test accuracy, macro F1 and CPU minutes side by side.

    source infra/env.sh && python bench/training_defaults.py            # the full table (see README figures)
    python bench/training_defaults.py --datasets glyphs --only old      # one set, one side
    python bench/training_defaults.py --datasets digits --max-images 300 --epochs 1   # a smoke run
    python bench/training_defaults.py --json .state/bench-defaults.json # the rows as JSON too

The data sets (bench/datasets.py, written once under --data-dir, default .state/bench-data):
digits (1,797 real 8x8 scans, 10 classes), glyphs (36 characters rendered with Debian's fonts and
distorted, 64 px grey) and shapes (multi-label 128 px colour scenes, 5 labels). `shapes` is the one
kept out of tuning the new defaults (HELD_OUT): its figures are the honest test of them.

For each data set: `prepare_data` with the default SplitConfig (the same split for both sides), then
`fit_manifest` twice, each in a fresh Python process so CPU time and memory are per run:

- old: TrainConfig(epochs=8, image_size=64, lr=2e-3, early_stopping_patience=None), the defaults
  before issue 11, written out;
- new: TrainConfig(), whatever the defaults are now (epochs, image size and so on resolved from the
  data by imgclf/train/budget.py once that lands; until then the same as old).

Each trained model is scored on the test split by `evaluate_model` (no latency, no Grad-CAM, 200
bootstrap resamples for the 95% CIs). Accuracy is exact-match for multi-label data (every label
right), macro F1 at thresholds tuned on val. CPU minutes are user + sys of the run's process and
its waited-for children (the loader's workers) from just before training to just after the
evaluation, by resource.getrusage; wall minutes cover the same span. The decoded-image cache starts
empty for every run (a temp IMGCLF_CACHE_DIR), so decoding is in every run's figures. "epochs" is
epochs run / epochs planned (best epoch, and "early" when early stopping ended the run); "image px"
is the input size the model was trained at. The machine's other jobs do not change CPU minutes much,
but they do change wall minutes.

`--max-images` (a seeded subset of each set) and `--epochs` (both sides) are for smoke runs only: the
output says so, and such figures say nothing about the defaults.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HELD_OUT = "shapes"  # kept out of tuning the new defaults
DATASETS = ("digits", "glyphs", "shapes")
OLD_DEFAULTS = {"epochs": 8, "image_size": 64, "lr": 2e-3, "early_stopping_patience": None}
CONFIGS = {"old": OLD_DEFAULTS, "new": {}}
N_BOOTSTRAP = 200


# -- one run, in its own process -------------------------------------------------------------------


def cpu_seconds() -> float:
    """User + sys CPU seconds of this process and of its children that have been waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _resolved(info: dict, key: str):
    """What the run resolved `key` to, wherever the training info keeps it; None when it does not say."""
    for holder in (info.get("resolved"), info.get("budget"), info.get("auto"), info):
        if isinstance(holder, dict) and isinstance(holder.get(key), (int, float)) and not isinstance(holder[key], bool):
            return holder[key]
    if isinstance(info.get(f"resolved_{key}"), (int, float)):
        return info[f"resolved_{key}"]
    value = info.get("train_config", {}).get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def run_one(job: dict) -> dict:
    """Prepare the data set, train one config on it, score it on test: one row."""
    from common import CpuWatch

    from imgclf.logs import quiet_third_party

    logging.basicConfig(level=logging.INFO if job["verbose"] else logging.WARNING, format="  %(message)s")
    quiet_third_party()
    from imgclf.data.prepare import prepare_data
    from imgclf.data.sources import load_source
    from imgclf.evaluate.evaluation import EvaluationConfig, evaluate_model
    from imgclf.train.config import TrainConfig
    from imgclf.train.loop import fit_manifest

    manifest = load_source(job["source"])
    if job["max_images"] and len(manifest) > job["max_images"]:
        records = manifest.records.sample(n=job["max_images"], random_state=0).sort_index()
        manifest = type(manifest)(manifest.root, records.reset_index(drop=True))
    prepared = prepare_data(manifest)
    split = prepared.manifest
    config = TrainConfig(**job["config"])

    scoring = EvaluationConfig(n_bootstrap=N_BOOTSTRAP, misclassified_images=0, gradcam_images=0, measure_latency=False)
    watch = CpuWatch()
    with watch():
        cpu, wall = cpu_seconds(), time.perf_counter()
        trained = fit_manifest(split, config)
        evaluation = evaluate_model(trained, split, config=scoring)
        gc.collect()  # the loader's worker processes are joined (and their CPU time counted) by now
        cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall

    report, info = evaluation.report, trained.info
    counts = split.records["split"].value_counts()
    records = split.records
    return {
        "dataset": job["dataset"],
        "held_out": job["dataset"] == HELD_OUT,
        "defaults": job["name"],
        "config": job["config"],
        "multi_label": bool(split.multi_label),
        "classes": len(split.class_names),
        "images": {s: int(counts.get(s, 0)) for s in ("train", "val", "test")},
        "source_px": int(max(records["width"].max(), records["height"].max())),
        "skipped": len(prepared.skipped),
        "accuracy": report.accuracy,
        "accuracy_ci": [report.accuracy_ci_low, report.accuracy_ci_high],
        "macro_f1": report.macro_f1,
        "macro_f1_ci": [report.macro_f1_ci_low, report.macro_f1_ci_high],
        "epochs_run": len(trained.history),
        "epochs_planned": _resolved(info, "epochs"),
        "best_epoch": info.get("best_epoch"),
        "stopped_early": bool(info.get("stopped_early")),
        "image_px": trained.preprocess.image_size,
        "lr": _resolved(info, "lr"),
        "best_val_score": info.get("best_val_score"),
        "cpu_min": cpu / 60,
        "wall_min": wall / 60,
        "train_images_per_s": info.get("steady_train_images_per_s"),
        "others_cpu_share": watch.shares[0] if watch.shares else None,
        "most_confused": _most_confused(report),
    }


def _most_confused(report, top: int = 5) -> list[str]:
    """`"O -> 0: 4"`: the commonest mistakes on test (single-label; multi-label has no confusion matrix)."""
    pairs = [
        (count, true, predicted)
        for true, row in enumerate(report.confusion)
        for predicted, count in enumerate(row)
        if true != predicted and count
    ]
    names = report.class_names
    return [f"{names[t]} -> {names[p]}: {c}" for c, t, p in sorted(pairs, key=lambda x: (-x[0], x[1], x[2]))[:top]]


def _child(job_file: str, result_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    os.environ["IMGCLF_CACHE_DIR"] = job["cache_dir"]  # an empty cache: decoding counts in every run
    Path(result_file).write_text(json.dumps(run_one(job)))


def run_in_subprocess(job: dict) -> dict:
    """`run_one(job)` in a fresh interpreter (this script with --child), with an empty decoded cache."""
    with tempfile.TemporaryDirectory(prefix="imgclf-bench-defaults-") as scratch:
        job = {**job, "cache_dir": str(Path(scratch) / "cache")}
        job_file, result_file = Path(scratch) / "job.json", Path(scratch) / "result.json"
        job_file.write_text(json.dumps(job))
        done = subprocess.run([sys.executable, __file__, "--child", str(job_file), str(result_file)])
        if done.returncode != 0 or not result_file.is_file():
            raise RuntimeError(f"the {job['name']} run on {job['dataset']} failed (exit code {done.returncode})")
        return json.loads(result_file.read_text())


# -- the table -------------------------------------------------------------------------------------


def _ci(value: float, ci: list) -> str:
    low, high = ci
    return f"{value:.3f}" if low is None else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _epochs(row: dict) -> str:
    planned = "-" if row["epochs_planned"] is None else f"{row['epochs_planned']:g}"
    best = f", best {row['best_epoch']}" if row.get("best_epoch") is not None else ""
    return f"{row['epochs_run']}/{planned}{best}{', early' if row['stopped_early'] else ''}"


def table(rows: list[dict]) -> str:
    lines = [
        "| dataset | defaults | test accuracy [95% CI] | macro F1 [95% CI] | epochs (run/planned) | image px "
        "| CPU min | wall min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        name = row["dataset"] + (" (held out)" if row["held_out"] else "")
        lines.append(
            f"| {name} | {row['defaults']} | {_ci(row['accuracy'], row['accuracy_ci'])} "
            f"| {_ci(row['macro_f1'], row['macro_f1_ci'])} | {_epochs(row)} | {row['image_px']} "
            f"| {row['cpu_min']:.2f} | {row['wall_min']:.2f} |"
        )
    return "\n".join(lines)


def deltas(rows: list[dict]) -> list[str]:
    """New minus old per data set, where both ran."""
    out = []
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        side = {row["defaults"]: row for row in rows if row["dataset"] == dataset}
        if {"old", "new"} <= side.keys():
            old, new = side["old"], side["new"]
            ratio = new["cpu_min"] / old["cpu_min"] if old["cpu_min"] else math.nan
            out.append(
                f"{dataset}{' (held out)' if old['held_out'] else ''}: new - old accuracy "
                f"{100 * (new['accuracy'] - old['accuracy']):+.1f} pts, macro F1 "
                f"{100 * (new['macro_f1'] - old['macro_f1']):+.1f} pts, CPU x{ratio:.2f} "
                f"({old['cpu_min']:.1f} -> {new['cpu_min']:.1f} min)"
            )
    return out


def describe(row: dict) -> str:
    images = row["images"]
    kind = "multi-label" if row["multi_label"] else "single-label"
    return (
        f"{row['dataset']}: {sum(images.values())} images ({images['train']}/{images['val']}/{images['test']} "
        f"train/val/test), {row['classes']} {'labels' if row['multi_label'] else 'classes'}, {kind}, "
        f"source {row['source_px']} px" + (f", {row['skipped']} files skipped" if row["skipped"] else "")
    )


# -- main ------------------------------------------------------------------------------------------


def _sources(names: list[str], data_dir: Path) -> dict[str, str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from datasets import WRITERS

    sources = {}
    for name in names:
        started = time.perf_counter()
        sources[name] = str(WRITERS[name](data_dir))
        print(f"data set {name}: {sources[name]} ({time.perf_counter() - started:.1f} s)", flush=True)
    return sources


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--data-dir", type=Path, default=Path(".state/bench-data"))
    parser.add_argument("--only", choices=tuple(CONFIGS), help="run one side only")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--max-images", type=int, help="smoke runs: a seeded subset of this many images per set")
    parser.add_argument("--epochs", type=int, help="smoke runs: this many epochs on both sides")
    parser.add_argument(
        "--max-steps-per-epoch", type=int, help="smoke runs: TrainConfig.max_steps_per_epoch on both sides"
    )
    parser.add_argument(
        "--threads", type=int, help="torch threads of every run, both sides (e.g. 1 beside another benchmark)"
    )
    parser.add_argument("--verbose", action="store_true", help="show the training log")
    args = parser.parse_args()

    overrides = {}
    if args.epochs:
        overrides["epochs"] = args.epochs
    if args.max_steps_per_epoch:
        overrides["max_steps_per_epoch"] = args.max_steps_per_epoch
    smoke = bool(overrides or args.max_images)
    sides = [args.only] if args.only else list(CONFIGS)
    sources = _sources(args.datasets, args.data_dir)

    rows = []
    for dataset, source in sources.items():
        for name in sides:
            job = {
                "dataset": dataset,
                "source": source,
                "name": name,
                "config": {**({"threads": args.threads} if args.threads else {}), **CONFIGS[name], **overrides},
                "max_images": args.max_images,
                "verbose": args.verbose,
            }
            print(f"training {dataset} with the {name} defaults {job['config'] or '(TrainConfig())'} ...", flush=True)
            row = run_in_subprocess(job)
            rows.append(row)
            print(
                f"  accuracy {row['accuracy']:.3f}, macro F1 {row['macro_f1']:.3f}, epochs {_epochs(row)}, "
                f"{row['image_px']} px, {row['cpu_min']:.2f} CPU min, {row['wall_min']:.2f} wall min, "
                f"other processes used {row['others_cpu_share'] or 0:.0%} of the CPU"
                + (f"; most confused {', '.join(row['most_confused'][:3])}" if row["most_confused"] else ""),
                flush=True,
            )
            if args.json:  # after every run: a long benchmark that dies keeps what it finished
                args.json.write_text(json.dumps(rows, indent=1))

    print()
    for row in {row["dataset"]: row for row in rows}.values():
        print(describe(row))
    print(f"held out of tuning the new defaults: {HELD_OUT}; {os.cpu_count()} cores\n")
    print(table(rows))
    for line in deltas(rows):
        print(line)
    busy = [row for row in rows if (row["others_cpu_share"] or 0) > 0.1]
    if busy:
        print(
            "\nwarning: other processes used more than 10% of the CPU during "
            + ", ".join(f"{r['dataset']}/{r['defaults']} ({r['others_cpu_share']:.0%})" for r in busy)
            + ": torch's spinning threads burn more CPU time then, so those CPU minutes are inflated"
        )
    if smoke:
        print(
            "\nsmoke run (--max-images, --epochs or --max-steps-per-epoch): the figures say nothing about the defaults"
        )


if __name__ == "__main__":
    main()
