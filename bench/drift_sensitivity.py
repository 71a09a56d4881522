"""Drift detection on offline data: how often an in-distribution window raises a false alarm, and how
often a shifted one is caught, per signal, against the shift's severity and the window size.

    python bench/drift_sensitivity.py                                    # about 16 minutes on 2 cores
    python bench/drift_sensitivity.py --windows 20 --shift-windows 5 --sizes 50   # a quick look

Data: scikit-learn's 1,797 digits as PNGs, split by `stratified_split` (seed 42) into train (35%),
val (10%, model selection) and a held-out half that is split again, by cluster and stratified by
class (seed 0), into the reference (40% of it) and the traffic (60%). A resnet10t is fitted from
scratch at 32 px by `imgclf.train.loop.fit` (which also fits the embedding projection) and exported
to ONNX; the reference profile is `reference_profile` of that ONNX file on the reference images, and
the traffic rows are the same columns on the traffic images (each shifted copy written as a 32 px
PNG first; unshifted, those rows equal the originals' exactly). Neither reference nor traffic images
are ever trained on.

A window is W rows drawn without replacement from the traffic rows (numpy seed per setting), and
`detect_drift(window, reference, DriftConfig(min_rows=W))` judges it. The false-alarm rate is the
share of unshifted windows called drifted, the detection rate the share of shifted ones. One call
costs 2-3 s on the 2 shared cores (Evidently's report and the domain classifier; the bench prints
it), so the defaults are small: 60 in-distribution windows per W (standard error of a rate near 5%:
2.8 points; near 1%: 1.3) and 6 shifted windows per (shift, severity, W) (a rate is then 0, 17, 33 ...
100%: it tells "never", "sometimes" and "always" apart, no finer), about 16 minutes in all.
`--windows 200 --shift-windows 30` (1.5 points near 5%; 9 points at 50%) takes about an hour.
The windows of one setting overlap (W out of about 600 traffic rows), so they are not independent
draws of the whole distribution: the rates hold for this reference and this traffic set.

Shifts (applied to the traffic images at model input size, before the service would see them):
darker (pixels times a factor), brighter (blended towards white), Gaussian blur (radius, px),
Gaussian noise (sigma, of 255), rotation (degrees), and class mix (no pixel changes: a share of the
window drawn from digit 0, whose share is 10% in the traffic; the traffic holds 59 zeros and a
window draws without replacement, so a cell that needs more is skipped). This is a measurement:
nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import scratch_dir

SIGNALS = ("image_statistics", "prediction", "predicted_class", "embedding")
SIZE = 32
STATS = ("brightness", "contrast", "saturation", "sharpness", "entropy", "clipped")


def _darker(image: np.ndarray, factor: float, rng) -> np.ndarray:
    return np.round(image * factor).astype(np.uint8)


def _brighter(image: np.ndarray, amount: float, rng) -> np.ndarray:
    return np.round(image + (255.0 - image) * amount).astype(np.uint8)


def _blur(image: np.ndarray, radius: float, rng) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def _noise(image: np.ndarray, sigma: float, rng) -> np.ndarray:
    return np.clip(image + rng.normal(0.0, sigma, image.shape), 0, 255).round().astype(np.uint8)


def _rotate(image: np.ndarray, degrees: float, rng) -> np.ndarray:
    return np.asarray(Image.fromarray(image).rotate(degrees, resample=Image.BILINEAR))


PIXEL_SHIFTS: dict[str, tuple[Callable, tuple[float, ...]]] = {
    "darker (x factor)": (_darker, (0.9, 0.75, 0.5)),
    "brighter (to white)": (_brighter, (0.03, 0.1, 0.25)),
    "blur (radius px)": (_blur, (0.5, 1.0, 2.0)),
    "noise (sigma)": (_noise, (4.0, 10.0, 25.0)),
    "rotation (degrees)": (_rotate, (5.0, 15.0, 30.0)),
}
CLASS_MIX = ("class mix (share of digit 0)", (0.2, 0.35, 0.6))


# -- data and model --------------------------------------------------------------------------------


def split_data(scratch: Path):
    """(split manifest, reference paths, traffic paths, traffic true labels)."""
    from imgclf.data.digits import write_digits
    from imgclf.data.ingest import ingest_folder
    from imgclf.data.split import SplitConfig, stratified_split

    write_digits(scratch / "digits")
    manifest = stratified_split(ingest_folder(scratch / "digits"), SplitConfig(train=0.35, val=0.10, test=0.55))
    held = manifest.records[manifest.records["split"] == "test"]
    rng = np.random.default_rng(0)
    clusters = held.groupby("split_cluster")
    order = rng.permutation(list(clusters.groups))
    quota = (held["label"].value_counts() * 0.4).round()
    taken: dict[str, int] = {}
    reference, traffic = [], []
    for key in order:
        rows = clusters.get_group(key)
        label = rows["label"].mode().iloc[0]
        side = reference if taken.get(label, 0) < quota[label] else traffic
        if side is reference:
            taken[label] = taken.get(label, 0) + len(rows)
        side.append(rows)
    reference, traffic = pd.concat(reference), pd.concat(traffic)
    root = Path(manifest.root)
    return manifest, [root / p for p in reference["path"]], [root / p for p in traffic["path"]], traffic["label"]


def train_and_export(manifest, out: Path, epochs: int) -> Path:
    """resnet10t from scratch at 32 px on the train split (the way tests/conftest.py's small_model is)."""
    from imgclf.augment.policy import AugmentPolicy
    from imgclf.bundle import ONNX_FILE
    from imgclf.data.decoded import DecodedSplits
    from imgclf.export.onnx import export_onnx
    from imgclf.preprocess import PreprocessSpec
    from imgclf.train.config import TrainConfig
    from imgclf.train.loop import fit

    config = TrainConfig(arch="resnet10t", pretrained=False, image_size=SIZE, epochs=epochs, lr=3e-3)
    data = DecodedSplits(manifest, PreprocessSpec(image_size=SIZE))
    trained = fit(data, config, AugmentPolicy())
    print(f"model: resnet10t {SIZE} px, {epochs} epochs, best val score {trained.info.get('best_val_score')}")
    onnx = out / ONNX_FILE
    onnx.write_bytes(export_onnx(trained))
    return onnx


def shifted_rows(onnx: Path, traffic: list[Path], out: Path, shift: Callable | None, level: float) -> pd.DataFrame:
    """The log's columns for the traffic images, each shifted at model input size and saved as PNG."""
    from imgclf.bundle import onnx_metadata
    from imgclf.data.decode import open_image
    from imgclf.drift.reference import reference_profile

    spec = onnx_metadata(onnx).preprocess
    rng = np.random.default_rng(1)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, path in enumerate(traffic):
        pixels = spec.resize(open_image(path)[0])
        if shift is not None:
            pixels = shift(pixels, level, rng)
        paths.append(out / f"{i:05d}.png")
        Image.fromarray(pixels).save(paths[-1])
    return reference_profile(onnx, paths, limit=len(paths))


# -- windows ---------------------------------------------------------------------------------------


def rates(rows: pd.DataFrame, reference: pd.DataFrame, size: int, count: int, seed: int, weights=None) -> dict:
    """Share of `count` windows of `size` rows called drifted: overall and per signal."""
    from imgclf.drift.detect import DriftConfig, detect_drift

    config = DriftConfig(min_rows=size)
    rng = np.random.default_rng(seed)
    hits = dict.fromkeys(("overall", *SIGNALS), 0)
    for _ in range(count):
        window = rows.iloc[rng.choice(len(rows), size=size, replace=False, p=weights)]
        decision, _ = detect_drift(window, reference, config)
        assert decision.enough_data, decision.reason
        hits["overall"] += decision.drifted
        for name in decision.drifted_signals:
            hits[name] += 1
    return {name: n / max(1, count) for name, n in hits.items()}


def class_weights(labels: pd.Series, share: float) -> np.ndarray:
    """Sampling weights that give digit 0 `share` of a window and the other digits the rest, as mixed."""
    zero = (labels.astype(str) == "0").to_numpy()
    weights = np.where(zero, share / zero.sum(), (1 - share) / (~zero).sum())
    return weights / weights.sum()


def class_mix(rows: pd.DataFrame, reference: pd.DataFrame, labels: pd.Series, sizes: list[int], count: int) -> None:
    """The class-mix rows; a cell whose window would need more zeros than the traffic holds is skipped
    (drawn without replacement, it would hold fewer than the stated share)."""
    name, levels = CLASS_MIX
    zeros = int((labels.astype(str) == "0").sum())
    for level in levels:
        for size in sizes:
            if round(level * size) > zeros:
                print(f"| {name} | {level:g} | {size} | - (the traffic holds {zeros} zeros) |", flush=True)
                continue
            cells = rates(rows, reference, size, count, size, class_weights(labels, level))
            print(f"| {name} | {level:g} | {size} | {_row(cells)} |", flush=True)


def _row(cells: dict) -> str:
    return " | ".join(f"{cells[name]:.0%}" for name in ("overall", *SIGNALS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[50, 100, 200], help="window sizes W")
    parser.add_argument("--windows", type=int, default=60, help="in-distribution windows per W")
    parser.add_argument("--shift-windows", type=int, default=6, help="shifted windows per (shift, severity, W)")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    from imgclf.drift.detect import DriftConfig

    started = time.perf_counter()
    with scratch_dir("imgclf-bench-drift-") as scratch:
        os.environ.update(IMGCLF_STATE=str(scratch / "state"), IMGCLF_CACHE_DIR=str(scratch / "cache"))
        manifest, ref_paths, traffic_paths, labels = split_data(scratch)
        onnx = train_and_export(manifest, scratch, args.epochs)
        from imgclf.drift.reference import reference_profile

        reference = reference_profile(onnx, ref_paths, limit=len(ref_paths))
        clean = shifted_rows(onnx, traffic_paths, scratch / "shifted" / "none", None, 0)
        original = reference_profile(onnx, traffic_paths, limit=len(traffic_paths))
        same = np.allclose(original[list(STATS)].to_numpy(), clean[list(STATS)].to_numpy())
        print(f"unshifted 32 px copies give the originals' statistics: {same}")
        accuracy = float((clean["label"].to_numpy() == labels.astype(str).to_numpy()).mean())
        print(f"reference {len(reference)} rows, traffic {len(clean)} rows, traffic accuracy {accuracy:.3f}")
        print(f"config: DriftConfig(min_rows=W) otherwise default: {DriftConfig().model_dump()}")
        probe = time.perf_counter()
        rates(clean, reference, max(args.sizes), 3, 99)
        print(f"detect_drift: {(time.perf_counter() - probe) / 3:.2f} s a call at W={max(args.sizes)}")

        print(f"\n## False alarms: in-distribution windows ({args.windows} per W)\n")
        print("| W | overall | " + " | ".join(SIGNALS) + " |\n|---|---|" + "---|" * len(SIGNALS))
        for size in args.sizes:
            print(f"| {size} | {_row(rates(clean, reference, size, args.windows, size))} |", flush=True)

        print(f"\n## Detection: shifted windows ({args.shift_windows} per cell)\n")
        print("| shift | severity | W | overall | " + " | ".join(SIGNALS) + " |\n|---|---|---|---|" + "---|" * 4)
        for name, (shift, levels) in PIXEL_SHIFTS.items():
            for level in levels:
                rows = shifted_rows(onnx, traffic_paths, scratch / "shifted" / f"{shift.__name__}{level}", shift, level)
                for size in args.sizes:
                    cells = rates(rows, reference, size, args.shift_windows, size)
                    print(f"| {name} | {level:g} | {size} | {_row(cells)} |", flush=True)
        class_mix(clean, reference, labels, args.sizes, args.shift_windows)
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
