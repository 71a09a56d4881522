"""Decode once: a memory-mapped uint8 array (N, H, W, 3) of resized images, content-addressed.

The key covers the images' hashes in manifest order and the resize part of the PreprocessSpec, so a
re-run, an evaluation or another pipeline on the same data reuses the file instead of decoding again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from imgclf.data.decode import open_image
from imgclf.data.manifest import DatasetManifest
from imgclf.preprocess import PreprocessSpec


def default_cache_dir() -> Path:
    return Path(os.environ.get("IMGCLF_CACHE_DIR", ".state/cache"))


def cache_key(manifest: DatasetManifest, spec: PreprocessSpec) -> str:
    h = hashlib.sha256()
    h.update(f"{spec.image_size}|{spec.resize_mode}|{spec.interpolation}\n".encode())
    for sha in manifest.records["sha256"].astype(str):
        h.update(sha.encode())
    return h.hexdigest()[:32]


def decoded_images(
    manifest: DatasetManifest, spec: PreprocessSpec, cache_dir: Path | None = None, workers: int | None = None
) -> np.ndarray:
    """The resized uint8 images of `manifest`, in row order, from the cache (built if missing)."""
    cache_dir = Path(cache_dir or default_cache_dir())
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{cache_key(manifest, spec)}.npy"
    n, size = len(manifest), spec.image_size
    if path.exists():
        cached = np.load(path, mmap_mode="r")
        if cached.shape == (n, size, size, 3):
            return cached
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".npy.tmp")
    os.close(fd)
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    paths = manifest.absolute_paths()

    def fill(i: int) -> None:
        image, _ = open_image(paths[i])
        out[i] = spec.resize(image)

    with ThreadPoolExecutor(max_workers=workers or (os.cpu_count() or 2)) as pool:
        list(pool.map(fill, range(n)))
    out.flush()
    del out
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")
