"""The default data set: scikit-learn's bundled handwritten digits (real 8x8 scans, no download),
written as PNG files in a folder per class, the layout users bring their own images in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_digits(out: str | Path, limit_per_class: int | None = None) -> int:
    """Write the digits as out/<digit>/<index>.png (8-bit grey). Returns the number of images written.

    Idempotent: files that already exist are left alone.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = Path(out)
    written = 0
    per_class: dict[int, int] = {}
    for index, (pixels, target) in enumerate(zip(digits.images, digits.target)):
        count = per_class.get(int(target), 0)
        if limit_per_class is not None and count >= limit_per_class:
            continue
        per_class[int(target)] = count + 1
        path = out / str(int(target)) / f"{index:04d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.round(pixels * (255.0 / 16.0)).astype(np.uint8), "L").save(path)
        written += 1
    return written
