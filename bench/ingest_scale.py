"""Ingest + per-file validation at scale: images/s and peak memory for growing image counts.

    source infra/env.sh && python bench/ingest_scale.py                    # 5k, 20k, 50k images
    python bench/ingest_scale.py --counts 5000 20000 --size 32 --classes 10

For each count it writes that many small PNGs (a folder per class, one bad file in every 1000:
empty, truncated or not an image), then, in a fresh process so that peak RSS belongs to that count
alone, runs imgclf.data.ingest.ingest_folder and imgclf.data.validate.check_images and reports
images/s and peak RSS, after ingest and after validation. The last lines give the growth of peak
RSS per extra image between the smallest and the largest count: the manifest row (~0.4 KB) has to
grow; pixels, file contents or per-file work queued up all at once must not.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

BAD_EVERY = 1000


def write_images(root: Path, count: int, size: int, classes: int) -> int:
    """`count` files, a folder per class; returns how many are deliberately bad."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    bad = 0
    for i in range(count):
        path = root / f"class_{i % classes:02d}" / f"{i:06d}.png"
        if i < classes:
            path.parent.mkdir(parents=True, exist_ok=True)
        if i % BAD_EVERY == BAD_EVERY - 1:
            bad += 1
            kind = (i // BAD_EVERY) % 3
            if kind == 0:
                path.write_bytes(b"")
            elif kind == 1:
                path.write_bytes(_png(base)[:-40])  # truncated
            else:
                path.write_bytes(b"this is not an image\n")
            continue
        image = base.copy()
        image[i % size] = i % 256  # distinct content per file
        path.write_bytes(_png(image))
    return bad


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def measure(root: Path) -> dict:
    """Runs in a fresh process: ingest + check_images on `root`; figures as a dict."""
    from imgclf.data.file_checks import check_images
    from imgclf.data.ingest import ingest_folder
    from imgclf.data.validation_config import ValidationConfig

    rss_before = _peak_rss_mb()
    started = time.perf_counter()
    manifest = ingest_folder(root)
    ingested = time.perf_counter()
    rss_ingest = _peak_rss_mb()
    kept, quarantine = check_images(manifest, ValidationConfig())
    done = time.perf_counter()
    return {
        "received": len(manifest),
        "kept": len(kept),
        "quarantined": len(quarantine),
        "ingest_per_s": len(manifest) / (ingested - started),
        "validate_per_s": len(manifest) / (done - ingested),
        "total_per_s": len(manifest) / (done - started),
        "rss_after_imports_mb": rss_before,
        "peak_rss_ingest_mb": rss_ingest,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[5000, 20000, 50000])
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process's entry
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return

    print(
        f"{'images':>8s} {'bad':>5s} {'kept':>8s} {'quarant.':>8s} {'ingest/s':>9s} {'validate/s':>10s} "
        f"{'total/s':>8s} {'RSS after imports MB':>20s} {'peak RSS ingest MB':>18s} {'peak RSS +validate MB':>21s}"
    )
    results = []
    for count in args.counts:
        scratch = Path(tempfile.mkdtemp(prefix="imgclf-ingest-"))
        try:
            bad = write_images(scratch, count, args.size, args.classes)
            child = subprocess.run(
                [sys.executable, __file__, "--measure", str(scratch)], check=True, capture_output=True, text=True
            )
            r = json.loads(child.stdout.strip().splitlines()[-1])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if not r["kept"] + r["quarantined"] == r["received"] == count:
            raise RuntimeError(
                f"{count} files written but received={r['received']} kept={r['kept']} quarantined={r['quarantined']}"
            )
        results.append(r)
        print(
            f"{count:8d} {bad:5d} {r['kept']:8d} {r['quarantined']:8d} {r['ingest_per_s']:9.0f} "
            f"{r['validate_per_s']:10.0f} {r['total_per_s']:8.0f} {r['rss_after_imports_mb']:20.0f} "
            f"{r['peak_rss_ingest_mb']:18.0f} {r['peak_rss_mb']:21.0f}"
        )
    if len(results) > 1:
        first, last = results[0], results[-1]
        extra = last["received"] - first["received"]
        for name, key in (("ingest", "peak_rss_ingest_mb"), ("ingest + validate", "peak_rss_mb")):
            slope = (last[key] - first[key]) * 1024 / extra
            print(f"peak RSS growth per extra image, {name}: {slope:.2f} KB (the manifest row itself is ~0.4 KB)")


if __name__ == "__main__":
    main()
