"""Peak memory and time of every pipeline step at 224 px, for growing data sets (issue 11).

    source infra/env.sh && python bench/memory_scale.py                      # 2,000, 10,000 and 50,000 images
    python bench/memory_scale.py --sizes 300 --steps ingest,validate,split   # a quick smoke run
    python bench/memory_scale.py --arch tf_efficientnet_lite0 --pretrained --json memory.json

Goal: every step at or under 4 GB of peak memory, peak memory within 20% from the second-largest size
to the largest (10,000 -> 50,000 by default), time per image roughly constant.

Data: N distinct 224x224 colour JPEGs (quality 90, ~12 KB each), a folder per class: scikit-learn's
handwritten digits (the class), upscaled, rotated and placed at random in a random colour, over a
random smooth colour field with a few random shapes, plus pixel noise. The images differ enough that
the split's near-duplicate detection (pHashes within 4 bits) grouped none of 2,000 (the split row's
notes give rows_in_shared_clusters at every size). Written once, by a process pool, seeded, into
`--data-dir` (default `$IMGCLF_STATE/bench-data/memory-scale-N`) and reused while the marker file
there matches. Disk: ~0.8 GB of images for the three default sizes, and while a size runs its
decoded cache (~150 KB an image: 7.5 GB at 50,000) in a scratch folder under TMPDIR or --work-dir.

Steps: the ZenML steps are thin wrappers; each is measured here as the imgclf calls its step makes,
in a fresh process (so each peak belongs to that step alone), in pipeline order, handing its outputs
to the next through files in a scratch folder (pickle for manifests, the model's own bundle format):
ingest (load_source), validate (validate, console report, suite HTML), split (stratified_split +
split_report), augment (preview_images + preview_grid), train (fit_resumable and compress, as the
step: it builds the decoded cache, here a fresh one per run under the scratch folder's state dir),
evaluate (evaluate_model with no production model, the HTML report and the model card), quantize
(DecodedSplits, ExportImages.from_splits, export_checked), register (write_release + register_bundle
+ describe_version into a throwaway MLflow sqlite store in the scratch folder), serve (the service's
Predictor on the release folder, `--predictions` single-image requests of test files in-process).
Training cannot run whole epochs of 50,000 images at 224 px on a few CPU cores: it runs one epoch of
at most `--train-steps` optimizer steps of 32 images (TrainConfig.max_steps_per_epoch), so its time
per image falls as N grows; its cache build and validation pass still cover the whole data set.
`--steps` picks the rows to report; every step before the last one picked runs too, as it makes the
inputs.

Memory, per step, because the decoded cache is a memory-mapped file and the workers are forked:
- peak anon MB: the largest total, over the step's whole process tree (the step, its DataLoader and
  decode workers), of anonymous + shared-memory pages: what the machine has to find room for. As PSS
  (Pss_Anon + Pss_Shmem, /proc/PID/smaps_rollup), so a page a forked worker still shares with its
  parent counts once. Sampled every 20 ms (bench/common.py TreeSampler: /proc/PID/status every
  sample, smaps_rollup, which is slow to read, now and then); a peak shorter than that can be missed.
- anon RSS-sum MB: the same from RssAnon + RssShmem (/proc/PID/status), which counts each shared page
  once per process: an upper bound, far above PSS while the workers are alive.
- peak RSS MB: ru_maxrss of the step's process (wait4), the largest single process of the tree. It
  includes file-backed pages, i.e. the parts of the memory-mapped cache the step has read, which grow
  with the data set but which the kernel drops whenever memory is short: a high figure here with a low
  peak anon is no risk.
Time: "wall s" and "CPU s" cover the step's calls only (imports and loading the inputs excluded; CPU
is user + sys of the step's process and its finished workers, the comparable figure on a shared
machine); "ms per image" is wall time over N (serve: over the predictions). The JSON adds the whole
process's wall and CPU time and the sampler's counts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pickle
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from common import TreeRun, run_tree

SIDE = 224
CLASSES = 10
JPEG_QUALITY = 90
DATA_VERSION = 1  # bump when the generator changes: cached folders are then written again
MARKER = ".memory-scale.json"  # hidden: ingest skips it
STEPS = ("ingest", "validate", "split", "augment", "train", "evaluate", "quantize", "register", "serve")
MEMORY_LIMIT_MB = 4096
GROWTH_LIMIT = 1.2
MODEL_NAME = "memory-scale"


# -- the data set ----------------------------------------------------------------------------------


def data_folder(root: Path, count: int, seed: int) -> Path:
    """`count` generated images under `root`, written unless the marker says they already are."""
    wanted = {"version": DATA_VERSION, "count": count, "seed": seed, "side": SIDE, "classes": CLASSES}
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return root
    if root.is_dir() and any(root.iterdir()) and not marker.is_file():
        raise SystemExit(f"{root} holds files this benchmark did not write; give an empty or a new --data-dir")
    shutil.rmtree(root, ignore_errors=True)
    for label in range(CLASSES):
        (root / f"class_{label}").mkdir(parents=True)
    chunks = [range(start, min(start + 500, count)) for start in range(0, count, 500)]
    started = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_write_chunk, [root] * len(chunks), chunks, [seed] * len(chunks)))
    marker.write_text(json.dumps(wanted))
    print(f"wrote {count} images to {root} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return root


def _write_chunk(root: Path, indices: range, seed: int) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in indices:
        label = i % CLASSES
        rng = np.random.default_rng([seed, i])
        image = _picture(digits, label, rng)
        image.save(root / f"class_{label}" / f"{i:06d}.jpg", quality=JPEG_QUALITY)


def _picture(digits, label: int, rng: np.random.Generator):
    """One digit of class `label`, randomly sized, rotated, placed and coloured, over a random smooth
    colour field with a few random shapes, plus noise."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)).resize((SIDE, SIDE), Image.BICUBIC)
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(1, 4)):
        x, y = rng.integers(-40, SIDE, 2)
        w, h = rng.integers(20, 90, 2)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x, y, x + w, y + h], fill=_colour(rng))
    pool = np.flatnonzero(digits.target == label)
    glyph = (digits.images[pool[rng.integers(len(pool))]] * (255 / 16)).astype(np.uint8)
    size = int(rng.integers(110, 190))
    mask = Image.fromarray(glyph).resize((size, size), Image.BICUBIC)
    mask = mask.rotate(float(rng.uniform(-25, 25)), resample=Image.BILINEAR, expand=True)
    w, h = mask.size
    at = (
        int(rng.integers(min(0, SIDE - w), max(0, SIDE - w) + 1)),
        int(rng.integers(min(0, SIDE - h), max(0, SIDE - h) + 1)),
    )
    canvas.paste(Image.new("RGB", mask.size, _colour(rng)), at, mask)
    noisy = np.asarray(canvas, dtype=np.int16) + rng.normal(0, 6, (SIDE, SIDE, 3)).astype(np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = (int(c) for c in rng.integers(0, 256, 3))
    return r, g, b


# -- the steps, each run in a child process ---------------------------------------------------------


@dataclass
class Work:
    """The child's view: where the data and the previous steps' outputs are, and the settings."""

    data: Path
    scratch: Path
    arch: str
    pretrained: bool
    train_steps: int
    predictions: int
    wall_s: float = 0.0
    cpu_s: float = 0.0

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """Time the step's calls (wall, and CPU of this process plus its finished workers)."""
        wall, cpu = time.perf_counter(), _cpu_s()
        yield
        self.wall_s += time.perf_counter() - wall
        self.cpu_s += _cpu_s() - cpu

    def save(self, name: str, value) -> None:
        (self.scratch / f"{name}.pkl").write_bytes(pickle.dumps(value))

    def load(self, name: str):
        return pickle.loads((self.scratch / f"{name}.pkl").read_bytes())

    @property
    def model_dir(self) -> Path:
        return self.scratch / "model"

    @property
    def release_dir(self) -> Path:
        return self.scratch / "release"


def _cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def step_ingest(work: Work) -> dict:
    from imgclf.data.sources import load_source

    with work.timed():
        manifest = load_source(str(work.data))
    work.save("raw", manifest)
    return {"rows": len(manifest)}


def step_validate(work: Work) -> dict:
    from imgclf.data.validate import console_report, validate
    from imgclf.data.validation_config import ValidationConfig

    manifest = work.load("raw")
    with work.timed():
        kept, quarantine, suite = validate(manifest, ValidationConfig(), raise_on_error=False)
        console_report(suite, quarantine)
        suite.to_dict(), suite.to_html(), quarantine.records.to_dict("records")
    suite.raise_for_errors(manifest.root)
    work.save("validated", kept)
    return dict(suite.counts)


def step_split(work: Work) -> dict:
    from imgclf.data.split import SplitConfig, split_report, stratified_split

    manifest = work.load("validated")
    with work.timed():
        split = stratified_split(manifest, SplitConfig())
        report = split_report(split)
    work.save("split", split)
    keys = ("train", "val", "test", "clusters", "rows_in_shared_clusters", "largest_cluster")
    return {key: report[key] for key in keys}


def step_augment(work: Work) -> dict:
    from imgclf.augment.policy import AugmentPolicy
    from imgclf.augment.preview import preview_grid, preview_images

    manifest = work.load("split")
    with work.timed():
        grid = preview_grid(preview_images(manifest, 8, 96), AugmentPolicy(), rows=4)
    grid.save(work.scratch / "augment_preview.png")
    return {"preview_px": list(grid.size)}


def step_train(work: Work) -> dict:
    from imgclf.augment.policy import AugmentPolicy
    from imgclf.compress.plan import compress
    from imgclf.train.config import TrainConfig
    from imgclf.train.loop import fit_resumable

    manifest = work.load("split")
    config = TrainConfig(
        arch=work.arch,
        pretrained=work.pretrained,
        image_size=SIDE,
        epochs=1,
        max_steps_per_epoch=work.train_steps,
        batch_size=32,
    )
    policy = AugmentPolicy()
    with work.timed():
        trained = compress(fit_resumable(manifest, config, policy), manifest, policy).model
    trained.save(work.model_dir)
    history = trained.history[-1]
    return {"val_score": trained.info["best_val_score"], "train_images_per_s": history.get("train_images_per_s")}


def step_evaluate(work: Work) -> dict:
    from imgclf.evaluate.evaluation import evaluate_model
    from imgclf.evaluate.model_card import model_card
    from imgclf.evaluate.report import render_html
    from imgclf.models.trained import TrainedModel

    manifest, model = work.load("split"), TrainedModel.load(work.model_dir)
    with work.timed():
        result = evaluate_model(model, manifest, champion_note="no production model (benchmark)")
        render_html(result.report, result.gate, result.figures, "memory scale", {"architecture": model.arch})
        card = model_card(model, manifest, result.report, result.gate, model_name=MODEL_NAME, version="1")
    work.save("evaluation", {"metrics": result.report.metrics(), "model_card": card})
    return {"test_images": result.report.n_images, "test_accuracy": result.report.metrics()["test_accuracy"]}


def step_quantize(work: Work) -> dict:
    from imgclf.data.decoded import DecodedSplits
    from imgclf.export.exporter import ExportImages, export_checked
    from imgclf.models.trained import TrainedModel

    manifest, model = work.load("split"), TrainedModel.load(work.model_dir)
    with work.timed():
        data = DecodedSplits(manifest, model.preprocess, model.class_names)
        exported, _search = export_checked(model, ExportImages.from_splits(data))
    work.save("exported", exported)
    return {"serve": exported.report.serve, "int8_recipe": exported.report.int8_recipe}


def step_register(work: Work) -> dict:
    from imgclf.bundle import write_release
    from imgclf.models.trained import TrainedModel
    from imgclf.registry import describe_version, register_bundle

    model, exported, evaluation = TrainedModel.load(work.model_dir), work.load("exported"), work.load("evaluation")
    with work.timed():
        bundle = write_release(
            work.release_dir,
            model,
            exported.onnx,
            exported.onnx_int8,
            metrics=evaluation["metrics"],
            export_report=exported.report.to_dict(),
            model_card=evaluation["model_card"],
        )
        registered = register_bundle(bundle, MODEL_NAME, tags={k: f"{v:.4f}" for k, v in evaluation["metrics"].items()})
        describe_version(registered.name, registered.version, evaluation["model_card"])
    return {"model_uri": registered.model_uri}


def step_serve(work: Work) -> dict:
    from imgclf.serving.predictor import Predictor

    test = work.load("split").subset("test")
    files = test.absolute_paths()[: work.predictions]
    uploads = [path.read_bytes() for path in files]
    uploads = [uploads[i % len(uploads)] for i in range(work.predictions)]
    with work.timed():
        predictor = Predictor.from_path(work.release_dir)
        answers = [predictor.predict(data) for data in uploads]
    labels = [test.records["label"].iloc[i % len(files)] for i in range(len(answers))]
    right = sum(answer["label"] == label for answer, label in zip(answers, labels))
    return {"predictions": len(answers), "served": predictor.onnx_path.name, "accuracy": right / len(answers)}


STEP_FUNCTIONS: dict[str, Callable[[Work], dict]] = {name: globals()[f"step_{name}"] for name in STEPS}


def child_main(step: str, work: Work, result: Path) -> None:
    """The child process: run one step, write its timing and facts as JSON to `result`."""
    from imgclf.logs import quiet_third_party

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    quiet_third_party()
    facts = STEP_FUNCTIONS[step](work)
    result.write_text(json.dumps({"wall_s": work.wall_s, "cpu_s": work.cpu_s, "facts": facts}, default=str))


# -- the driver -------------------------------------------------------------------------------------


@dataclass
class Row:
    step: str
    images: int
    peak_anon_mb: float
    peak_rss_mb: float
    wall_s: float | None  # None: the step failed
    cpu_s: float | None
    per_image_ms: float | None
    process: TreeRun
    facts: dict  # what the step reports (counts, scores), or {"failed": why}


def measure_size(count: int, data: Path, steps: list[str], args: argparse.Namespace) -> list[Row]:
    """Every step up to the last of `steps` on the `count` images in `data`, each in a fresh process;
    the rows of `steps` (and of a step that failed)."""
    scratch = Path(tempfile.mkdtemp(prefix=f"imgclf-memory-scale-{count}-", dir=args.work_dir))
    try:
        env = _child_env(scratch)
        rows = []
        for step in STEPS[: max(STEPS.index(s) for s in steps) + 1]:
            row = _measure_step(step, count, data, scratch, env, args)
            if step in steps or row.wall_s is None:
                rows.append(row)
                print(_table_line(row), flush=True)
            if row.wall_s is None:
                break  # the steps after it have no inputs
        return rows
    finally:
        if args.keep:
            print(f"kept the scratch folder {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def _data_dir(args: argparse.Namespace, count: int) -> Path:
    from imgclf import paths

    return (args.data_dir or paths.state_dir() / "bench-data" / f"memory-scale-{count}").resolve()


def _child_env(scratch: Path) -> dict[str, str]:
    """The children's environment: a fresh state dir, decoded cache and MLflow store in `scratch`."""
    env = dict(os.environ)
    env["IMGCLF_STATE"] = str(scratch / "state")
    env["IMGCLF_CACHE_DIR"] = str(scratch / "state" / "cache")
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch / 'mlflow.db'}"
    return env


def _measure_step(step: str, count: int, data: Path, scratch: Path, env: dict, args: argparse.Namespace) -> Row:
    result, log = scratch / f"{step}.json", scratch / f"{step}.log"
    options = {
        "--child": step,
        "--child-data": data,
        "--child-scratch": scratch,
        "--child-result": result,
        "--arch": args.arch,
        "--train-steps": args.train_steps,
        "--predictions": args.predictions,
    }
    cmd = [sys.executable, str(Path(__file__).resolve()), *(str(v) for pair in options.items() for v in pair)]
    if args.pretrained:
        cmd.append("--pretrained")
    print(f"{step} on {count:,} images: log {log}", file=sys.stderr, flush=True)
    run = run_tree(cmd, env=env, cwd=scratch, log=log)
    if run.returncode != 0:
        return _failed(step, count, run, log)
    own = json.loads(result.read_text())
    per = own["facts"].get("predictions", count) if step == "serve" else count
    return Row(
        step=step,
        images=count,
        peak_anon_mb=run.peak_anon_mb,
        peak_rss_mb=run.peak_rss_mb,
        wall_s=own["wall_s"],
        cpu_s=own["cpu_s"],
        per_image_ms=1000 * own["wall_s"] / per,
        process=run,
        facts=own["facts"],
    )


def _failed(step: str, count: int, run: TreeRun, log: Path) -> Row:
    """The row of a step that failed: its peaks until then, why, and the end of its log on stderr."""
    why = f"exit {run.returncode}" + (" (killed: out of memory?)" if run.returncode == -9 else "")
    tail = log.read_text(errors="replace")[-3000:]
    print(f"step {step} on {count:,} images failed, {why}; its log ({log}) ends:\n{tail}", file=sys.stderr)
    return Row(step, count, run.peak_anon_mb, run.peak_rss_mb, None, None, None, run, {"failed": why})


HEADER = (
    "| step | images | peak anon MB | peak RSS MB | anon RSS-sum MB | wall s | CPU s | ms per image | notes |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---|"
)


def _table_line(row: Row) -> str:
    notes = ", ".join(f"{k} {_short(v)}" for k, v in row.facts.items())
    return (
        f"| {row.step} | {row.images:,} | {row.peak_anon_mb:,.0f} | {row.peak_rss_mb:,.0f} "
        f"| {row.process.peak_anon_rss_mb:,.0f} | {_number(row.wall_s, '.1f')} "
        f"| {_number(row.cpu_s, '.1f')} | {_number(row.per_image_ms, '.2f')} | {notes} |"
    )


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, "," + spec)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def verdicts(rows: list[Row]) -> str:
    """Per step: the largest peak against the limit, the growth between the two largest sizes, and
    whether the step ran at every size."""
    sizes = sorted({row.images for row in rows})
    lines = [
        f"| step | max peak anon MB | peak anon {_pair(sizes)} | ms per image {_pair(sizes)} | "
        f"<= {MEMORY_LIMIT_MB} MB | growth <= {GROWTH_LIMIT} | verdict |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for step in dict.fromkeys(row.step for row in rows):
        by_size = {row.images: row for row in rows if row.step == step}
        peak = max(row.peak_anon_mb for row in by_size.values())
        memory_ok = "PASS" if peak <= MEMORY_LIMIT_MB else "FAIL"
        growth, speed, growth_ok = "-", "-", "-"
        if len(sizes) > 1 and sizes[-2] in by_size and sizes[-1] in by_size:
            small, large = by_size[sizes[-2]], by_size[sizes[-1]]
            ratio = large.peak_anon_mb / small.peak_anon_mb
            growth, growth_ok = f"{ratio:.2f}", "PASS" if ratio <= GROWTH_LIMIT else "FAIL"
            if small.per_image_ms and large.per_image_ms:
                speed = f"{large.per_image_ms / small.per_image_ms:.2f}"
        failed = [f"{row.images:,}" for row in by_size.values() if row.wall_s is None]
        verdict = "PASS" if memory_ok == "PASS" and growth_ok != "FAIL" else "FAIL"
        if failed:
            verdict = f"FAIL (failed at {', '.join(failed)})"
        elif len(by_size) < len(sizes):
            verdict += " (not run at every size)"
        lines.append(f"| {step} | {peak:,.0f} | {growth} | {speed} | {memory_ok} | {growth_ok} | {verdict} |")
    return "\n".join(lines)


def _pair(sizes: list[int]) -> str:
    return f"{sizes[-1]:,}/{sizes[-2]:,}" if len(sizes) > 1 else "ratio"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,10000,50000", help="comma-separated image counts")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {','.join(STEPS)}")
    parser.add_argument("--arch", default="mobilenetv3_small_050")
    parser.add_argument("--pretrained", action="store_true", help="start from the installed ImageNet weights")
    parser.add_argument("--train-steps", type=int, default=50, help="optimizer steps of 32 images in the one epoch")
    parser.add_argument("--predictions", type=int, default=200, help="single-image requests the serve step answers")
    parser.add_argument("--seed", type=int, default=0, help="of the generated images")
    parser.add_argument(
        "--data-dir", type=Path, help="the generated images (one size only); default per size in the state dir"
    )
    parser.add_argument(
        "--work-dir", type=Path, help="where the scratch folders go (a decoded cache is ~150 KB an image)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folders (outputs, logs, cache)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    for name in ("child", "child-data", "child-scratch", "child-result"):  # the child process's entry
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        work = Work(
            Path(args.child_data),
            Path(args.child_scratch),
            args.arch,
            args.pretrained,
            args.train_steps,
            args.predictions,
        )
        child_main(args.child, work, Path(args.child_result))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    steps = [s.strip() for s in args.steps.split(",")]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise SystemExit(f"unknown steps {unknown}; steps are {','.join(STEPS)}")
    if args.data_dir and len(sizes) > 1:
        raise SystemExit("--data-dir holds one size; give one --sizes value with it")
    folders = {count: data_folder(_data_dir(args, count), count, args.seed) for count in sizes}
    print(HEADER, flush=True)
    rows: list[Row] = []
    for count, data in folders.items():
        rows += measure_size(count, data, steps, args)
        if args.json:  # after every size: a long run that dies later keeps what it measured
            args.json.write_text(json.dumps([asdict(row) for row in rows], indent=2, default=str))
    print()
    print(verdicts(rows))


if __name__ == "__main__":
    main()
