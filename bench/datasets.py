"""Offline data sets of different kinds for the benchmarks, written where the product's sources read them.

    python bench/datasets.py                       # all three under .state/bench-data, then a summary
    python bench/datasets.py --data-dir /tmp/d --glyphs-per-class 10 --shapes-count 200

Each generator writes a source `imgclf.data.prepare.prepare_data` reads and returns its path:

- digits: scikit-learn's 1,797 real 8x8 handwritten digit scans, a folder per class;
- glyphs: A-Z and 0-9 rendered with Debian's DejaVu and Liberation fonts, distorted, 64 px grey,
  a folder per class;
- shapes: multi-label 128 px colour scenes (a CSV manifest `file,label`, labels joined by "|").

Deterministic: every image is drawn from its own seeded generator (seed, class, index), so the files
are the same bytes whatever the number of processes. Idempotent: a finished set carries a hidden
`.complete.json` (its parameters; hidden files are not ingested) and is not written again; an
unfinished one is written again whole. The folder name holds the parameters, so two sizes of one set
never mix. Sets of more than 2000 images are drawn by two processes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

MARKER = ".complete.json"
PARALLEL_ABOVE = 2000  # images; more than this are drawn by two processes
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation")
GLYPH_CLASSES = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
SHAPE_KINDS = ("circle", "ring", "square", "star", "triangle")


# -- shared ----------------------------------------------------------------------------------------


def _complete(folder: Path, params: dict) -> bool:
    marker = folder / MARKER
    return marker.is_file() and json.loads(marker.read_text()) == params


def _mark_complete(folder: Path, params: dict) -> None:
    (folder / MARKER).write_text(json.dumps(params, indent=1, sort_keys=True))


def _draw_all(draw_chunk: Callable[[list], list], jobs: list, workers: int | None = None) -> list:
    """`draw_chunk` over `jobs`, in two processes when there are many; results in the jobs' order."""
    workers = workers or (min(2, os.cpu_count() or 1) if len(jobs) > PARALLEL_ABOVE else 1)
    if workers == 1:
        return draw_chunk(jobs)
    size = math.ceil(len(jobs) / (workers * 4))
    chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        return [row for rows in pool.map(draw_chunk, chunks) for row in rows]


# -- digits ----------------------------------------------------------------------------------------


def write_digits(root: str | Path, limit_per_class: int | None = None) -> Path:
    """scikit-learn's 1,797 real 8x8 handwritten digit scans as `root/digits/<digit>/<index>.png`
    (`root/digits-<n>perclass/` with the first `limit_per_class` of each digit).

    The project's default data set and the one every default was first tried on: real scans, tiny,
    ten balanced classes. Useful as the baseline that any new default must not make worse, and as a
    source whose resolution (8 px) is far below every model's input size.
    """
    from imgclf.data.digits import write_digits as write

    folder = Path(root) / ("digits" if limit_per_class is None else f"digits-{limit_per_class}perclass")
    params = {"set": "digits", "version": 1, "limit_per_class": limit_per_class}
    if not _complete(folder, params):
        write(folder, limit_per_class)
        _mark_complete(folder, params)
    return folder


# -- glyphs ----------------------------------------------------------------------------------------


def font_files() -> list[Path]:
    """Debian's DejaVu and Liberation TrueType fonts, sorted (the set is the same on every machine
    with the fonts-dejavu-core/extra and fonts-liberation packages)."""
    files = sorted(p for d in FONT_DIRS for p in Path(d).glob("*.ttf"))
    if not files:
        raise FileNotFoundError(f"no .ttf fonts under {FONT_DIRS} (apt-get install fonts-dejavu fonts-liberation)")
    return files


@lru_cache(maxsize=256)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _perspective_coeffs(dst: np.ndarray, src: np.ndarray) -> list[float]:
    """PIL's PERSPECTIVE coefficients that map output corners `dst` to input corners `src` (4x2 each)."""
    rows = []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return np.linalg.solve(np.asarray(rows, float), src.reshape(8).astype(float)).tolist()


def _glyph(char: str, fonts: list[str], size: int, rng: np.random.Generator) -> Image.Image:
    """One distorted glyph: random font, stroke, rotation, shear, scale, shift, perspective, blur,
    grey levels, a background gradient, clutter strokes and noise."""
    big = size * 2  # drawn at twice the size and downsampled: smooth edges
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    font = _font(fonts[int(rng.integers(len(fonts)))], int(big * rng.uniform(0.55, 0.8)))
    stroke = int(rng.choice([0, 0, 0, 1, 2, 3]))
    draw.text((big / 2, big / 2), char, fill=255, font=font, anchor="mm", stroke_width=stroke, stroke_fill=255)
    if rng.random() < 0.2:  # thinner strokes
        mask = mask.filter(ImageFilter.MinFilter(3))

    # geometry: where the output's corners come from in the drawing (rotation, shear, aspect, scale,
    # shift), then each corner jittered (perspective)
    angle = math.radians(rng.uniform(-15, 15))
    shear = rng.uniform(-0.25, 0.25)
    scale = rng.uniform(0.8, 1.25)
    aspect = rng.uniform(0.8, 1.2)
    shift = rng.uniform(-0.12, 0.12, 2) * big
    corners = np.array([[0, 0], [big, 0], [big, big], [0, big]], float)
    centred = (corners - big / 2) * scale
    centred[:, 0] *= aspect
    centred[:, 0] += shear * centred[:, 1]
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    src = centred @ rot.T + big / 2 + shift + rng.normal(0, 0.04 * big, (4, 2))
    mask = mask.transform((big, big), Image.PERSPECTIVE, _perspective_coeffs(corners, src), Image.BILINEAR)
    blur = rng.uniform(0, 1.8)
    if blur > 0.3:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    alpha = np.asarray(mask.resize((size, size), Image.BILINEAR), np.float32) / 255.0

    # tones: background and ink at least 70 grey levels apart, either one darker
    background = rng.uniform(0, 255)
    ink = rng.uniform(0, 255)
    while abs(ink - background) < 70:
        ink = rng.uniform(0, 255)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    direction = rng.normal(size=2)
    gradient = (direction[0] * xx + direction[1] * yy) * rng.uniform(0, 60)
    picture = background + gradient + (ink - background) * alpha
    clutter = Image.new("L", (size, size), 0)
    lines = ImageDraw.Draw(clutter)
    for _ in range(int(rng.integers(0, 2))):  # a stray stroke, fainter than the ink
        (x0, y0), (x1, y1) = rng.uniform(0, size, (2, 2))
        lines.line([(x0, y0), (x1, y1)], fill=int(rng.uniform(80, 200)), width=int(rng.integers(1, 3)))
    picture += (ink - background) * 0.6 * np.asarray(clutter, np.float32) / 255.0
    picture += rng.normal(0, rng.uniform(0, 14), (size, size))
    return Image.fromarray(np.clip(np.round(picture), 0, 255).astype(np.uint8), "L")


def _draw_glyphs(jobs: list[tuple[str, int, int, int, str, list[str]]]) -> list[str]:
    for char_index, index, size, seed, path, fonts in jobs:
        rng = np.random.default_rng([seed, char_index, index])
        _glyph(GLYPH_CLASSES[char_index], fonts, size, rng).save(path, optimize=False)
    return [job[4] for job in jobs]


def write_glyphs(root: str | Path, per_class: int = 60, size: int = 64, seed: int = 0) -> Path:
    """A-Z and 0-9 (36 classes x `per_class`) rendered with Debian's 38 DejaVu and Liberation fonts
    (regular, bold, italic, condensed, mono, serif), each image distorted: random font, stroke
    weight, rotation, shear, aspect, scale, shift, perspective, blur, grey levels either way round, a
    background gradient, stray strokes and noise. `root/glyphs-36x<per_class>-<size>px-s<seed>/<char>/`.

    Useful because it is synthetic but not easy: O/0, I/1, S/5, Z/2 and B/8 look alike in some fonts
    and the distortions overlap the classes, so a fine-tuned net stays clearly below 100% and the
    defaults' differences show; and it is a kind of image (thin strokes, grey, no texture) unlike
    ImageNet and unlike the digits' blurry 8 px scans.
    """
    folder = Path(root) / f"glyphs-{len(GLYPH_CLASSES)}x{per_class}-{size}px-s{seed}"
    fonts = [str(p) for p in font_files()]
    params = {
        "set": "glyphs",
        "version": 2,
        "per_class": per_class,
        "size": size,
        "seed": seed,
        "fonts": [Path(f).name for f in fonts],
    }
    if _complete(folder, params):
        return folder
    jobs = []
    for char_index, char in enumerate(GLYPH_CLASSES):
        (folder / char).mkdir(parents=True, exist_ok=True)
        jobs.extend((char_index, i, size, seed, str(folder / char / f"{i:04d}.png"), fonts) for i in range(per_class))
    _draw_all(_draw_glyphs, jobs)
    _mark_complete(folder, params)
    return folder


# -- shapes ----------------------------------------------------------------------------------------


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A colour gradient with blotches (low-frequency noise) and grain: float (size, size, 3)."""
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    a, b = rng.uniform(0, 255, (2, 3))
    direction = rng.normal(size=2)
    t = np.clip(direction[0] * xx + direction[1] * yy + 0.5, 0, 1)[..., None]
    picture = a * (1 - t) + b * t
    cells = int(rng.integers(3, 9))
    blotches = rng.normal(0, rng.uniform(10, 35), (cells, cells, 3))
    blotch_img = np.stack(
        [
            np.asarray(Image.fromarray(blotches[..., c].astype(np.float32), "F").resize((size, size), Image.BICUBIC))
            for c in range(3)
        ],
        -1,
    )
    return picture + blotch_img + rng.normal(0, rng.uniform(2, 12), (size, size, 3))


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "square":
        points = [(math.pi / 4 + k * math.pi / 2, r) for k in range(4)]
    elif kind == "triangle":
        points = [(-math.pi / 2 + k * 2 * math.pi / 3, r) for k in range(3)]
    else:  # star: five points, inner radius 0.42 r
        points = [(-math.pi / 2 + k * math.pi / 5, r if k % 2 == 0 else 0.42 * r) for k in range(10)]
    return [(cx + d * math.cos(a + angle), cy + d * math.sin(a + angle)) for a, d in points]


def _shape_scene(size: int, rng: np.random.Generator) -> tuple[Image.Image, list[str]]:
    """Some of the five shapes (at least one; sometimes two of a kind) at random non-overlapping places,
    sizes, angles and colours on a random background."""
    present = []
    while not present:
        present = [kind for kind in SHAPE_KINDS if rng.random() < 0.4]
    objects = [kind for kind in present for _ in range(1 + int(rng.random() < 0.2))]
    rng.shuffle(objects)
    scale = 4  # drawn at 4x and downsampled: smooth edges
    canvas = _background(size, rng)
    placed: list[tuple[float, float, float]] = []
    for kind in objects:
        for attempt in range(200):
            r = rng.uniform(0.06, 0.2) * size * (0.97**attempt)
            cx, cy = rng.uniform(r, size - r, 2)
            if all(math.hypot(cx - x, cy - y) > r + pr + 2 for x, y, pr in placed):
                break
        placed.append((cx, cy, r))
        mask = Image.new("L", (size * scale, size * scale), 0)
        draw = ImageDraw.Draw(mask)
        sx, sy, sr = cx * scale, cy * scale, r * scale
        if kind == "circle":
            draw.ellipse([sx - sr, sy - sr, sx + sr, sy + sr], fill=255)
        elif kind == "ring":
            width = int(sr * rng.uniform(0.25, 0.45))
            draw.ellipse([sx - sr, sy - sr, sx + sr, sy + sr], outline=255, width=max(width, scale))
        else:
            draw.polygon(_polygon(kind, sx, sy, sr, rng.uniform(0, 2 * math.pi)), fill=255)
        alpha = np.asarray(mask.resize((size, size), Image.BOX), np.float32)[..., None] / 255.0
        local = canvas[int(max(cy - r, 0)) : int(cy + r) + 1, int(max(cx - r, 0)) : int(cx + r) + 1].mean((0, 1))
        colour = rng.uniform(0, 255, 3)
        for _ in range(50):  # a colour that stands out from the background under it
            if np.abs(colour - local).sum() > 150:
                break
            colour = rng.uniform(0, 255, 3)
        shading = rng.uniform(0.85, 1.15)
        canvas = canvas * (1 - alpha) + colour * shading * alpha
    canvas += rng.normal(0, 4, canvas.shape)
    return Image.fromarray(np.clip(np.round(canvas), 0, 255).astype(np.uint8), "RGB"), sorted(present)


def _draw_shapes(jobs: list[tuple[int, int, int, str]]) -> list[str]:
    labels = []
    for index, size, seed, path in jobs:
        picture, present = _shape_scene(size, np.random.default_rng([seed, index]))
        picture.save(path, quality=92)
        labels.append("|".join(present))
    return labels


def write_shapes(root: str | Path, count: int = 2000, size: int = 128, seed: int = 0) -> Path:
    """Multi-label colour scenes: each `size` px JPEG holds a random non-empty subset of five shape
    kinds (circle, ring, square, star, triangle; one or two of each kind present) at random sizes,
    positions, angles and colours on a colour gradient with blotches and grain. Written as
    `root/shapes-<count>-<size>px-s<seed>/images/<index>.jpg` with the manifest `labels.csv`
    (`file,label`, labels joined by "|"); the returned path is the CSV.

    Useful because it is unlike the other two in every way the defaults could key on: multi-label
    (BCE, exact-match accuracy), colour, JPEG, and a source resolution (128 px) well above 64 px where
    the smallest shapes (about 8 px across) lose what tells a star from a triangle or a ring from a
    circle at 64 px. It is the set kept out of tuning the defaults.
    """
    folder = Path(root) / f"shapes-{count}-{size}px-s{seed}"
    params = {"set": "shapes", "version": 1, "count": count, "size": size, "seed": seed, "kinds": list(SHAPE_KINDS)}
    manifest = folder / "labels.csv"
    if _complete(folder, params):
        return manifest
    (folder / "images").mkdir(parents=True, exist_ok=True)
    files = [f"images/{i:05d}.jpg" for i in range(count)]
    labels = _draw_all(_draw_shapes, [(i, size, seed, str(folder / f)) for i, f in enumerate(files)])
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file", "label"])
        writer.writerows(zip(files, labels))
    _mark_complete(folder, params)
    return manifest


# -- all -------------------------------------------------------------------------------------------

WRITERS: dict[str, Callable[[Path], Path]] = {
    "digits": write_digits,
    "glyphs": write_glyphs,
    "shapes": write_shapes,
}


def write_sets(root: str | Path, names: Iterable[str] = WRITERS) -> dict[str, Path]:
    """The named sets at their default sizes under `root`: {name: source path}."""
    return {name: WRITERS[name](Path(root)) for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=".state/bench-data")
    parser.add_argument("--glyphs-per-class", type=int, default=60)
    parser.add_argument("--shapes-count", type=int, default=2000)
    args = parser.parse_args()
    import time

    for name, write in (
        ("digits", lambda root: write_digits(root)),
        ("glyphs", lambda root: write_glyphs(root, per_class=args.glyphs_per_class)),
        ("shapes", lambda root: write_shapes(root, count=args.shapes_count)),
    ):
        start = time.perf_counter()
        path = write(Path(args.data_dir))
        print(f"{name}: {path} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
