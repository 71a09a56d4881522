"""Shared by the benchmarks: the generated image folder and a scratch folder that is always removed."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_images(root: Path, count: int, side: int = 96) -> None:
    """`count` real-ish RGB images: scikit-learn's digits, upscaled, tinted, shifted; PNG and JPEG."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    for i in range(count):
        k = i % len(digits.images)
        grey = Image.fromarray((digits.images[k] * (255 / 16)).astype(np.uint8)).resize((side, side), Image.BILINEAR)
        shifted = np.roll(np.asarray(grey), rng.integers(-4, 5, size=2), axis=(0, 1))
        rgb = (shifted[..., None] * rng.uniform(0.5, 1.0, 3)).astype(np.uint8)
        path = root / str(digits.target[k]) / f"{i:05d}.{'png' if i % 2 else 'jpg'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path)


@contextlib.contextmanager
def scratch_dir(prefix: str):
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def image_folder(data: Path | None, scratch: Path, count: int) -> Path:
    """`data` if it already holds images, else `count` generated images there (or in `scratch`)."""
    root = data or scratch / "images"
    if not root.exists() or not any(root.iterdir()):
        write_images(root, count)
    return root


class CpuWatch:
    """Share of the machine's CPU time used by other processes while a block runs (Linux /proc/stat):
    all busy CPU time minus this process's and its reaped children's (the loader workers, which both
    loops join before returning). Other jobs slow torch's spinning threads far more than their share."""

    def __init__(self) -> None:
        self.shares: list[float] = []

    @staticmethod
    def _busy() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @contextlib.contextmanager
    def __call__(self):
        busy, own, wall = self._busy(), sum(os.times()[:4]), time.perf_counter()
        yield
        if busy is not None:
            others = (self._busy() - busy) - (sum(os.times()[:4]) - own)
            self.shares.append(max(0.0, others) / ((time.perf_counter() - wall) * (os.cpu_count() or 1)))
