"""Decode once: a memory-mapped uint8 array (N, H, W, 3) of resized images, content-addressed.

The key covers the images' hashes in manifest order and the resize part of the PreprocessSpec, so a
re-run, an evaluation or another pipeline on the same data reuses the file instead of decoding again.

Building decodes in worker *processes* (fork where the platform has it), each writing its chunk of
rows straight into the memory-mapped file, so no pixels travel between processes. Decoding small
PNG/JPEG files is mostly Python-level work under the GIL (header parsing, mode conversion, EXIF),
so threads barely help and processes do (`python bench/data_loading.py` measures processes against
in-process on its data). Small manifests decode in-process: starting workers would cost more than it
saves.

Only the bytes validation accepted enter the cache: each file is read once, its sha256 compared with
the manifest's `sha256` column (what validation hashed), and decoded under a pixel cap no larger than
the size the manifest recorded for it (which validation checked against its own cap). A file swapped
after validation stops the build with an error naming it.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd

from imgclf import paths
from imgclf.data.decode import DEFAULT_MAX_PIXELS, ImageRejected, open_image
from imgclf.data.manifest import DatasetManifest
from imgclf.logs import Progress
from imgclf.preprocess import PreprocessSpec

log = logging.getLogger(__name__)

_CHUNK = 256  # images per worker task: big enough to amortise the task, small enough to balance 2 cores
_MIN_IMAGES_FOR_PROCESSES = 2 * _CHUNK

# one row of work: (absolute path, sha256 the manifest recorded, largest width*height to decode)
_Row = tuple[str, str, int]


class CacheBuildError(RuntimeError):
    """An image in the manifest could not be decoded while building the cache (the message names it).

    The manifest given to the cache is expected to be validated; this is raised instead of writing a
    cache with a hole in it.
    """


def cache_key(manifest: DatasetManifest, spec: PreprocessSpec) -> str:
    h = hashlib.sha256()
    h.update(f"{spec.image_size}|{spec.resize_mode}|{spec.interpolation}\n".encode())
    for sha in manifest.records["sha256"].astype(str):
        h.update(sha.encode())
    return h.hexdigest()[:32]


def decoded_cache_path(
    manifest: DatasetManifest, spec: PreprocessSpec, cache_dir: Path | None = None, workers: int | None = None
) -> Path:
    """The `.npy` file holding the resized uint8 images of `manifest` in row order (built if missing).

    Training loaders take this path so that each worker process maps the file itself.
    """
    cache_dir = Path(cache_dir or paths.cache_dir())
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{cache_key(manifest, spec)}.npy"
    shape = (len(manifest), spec.image_size, spec.image_size, 3)
    if _is_complete(path, shape):
        return path
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=path.stem + ".", suffix=".npy.tmp")
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        del out  # header and size are on disk; the writers map the file themselves
        _decode_into(tmp, _rows(manifest), spec, workers)
        os.replace(tmp, path)  # atomic: readers never see a half-written cache
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def decoded_images(
    manifest: DatasetManifest, spec: PreprocessSpec, cache_dir: Path | None = None, workers: int | None = None
) -> np.ndarray:
    """The resized uint8 images of `manifest`, in row order, memory-mapped from the cache (built if missing)."""
    return np.load(decoded_cache_path(manifest, spec, cache_dir, workers), mmap_mode="r")


def _rows(manifest: DatasetManifest) -> list[_Row]:
    """What each row may decode to: its recorded hash, and its recorded size as the pixel cap (the
    default cap when the header was unreadable at ingest; such a row never passes validation)."""
    records = manifest.records
    width, height = (pd.to_numeric(records[c], errors="coerce").fillna(-1).astype("int64") for c in ("width", "height"))
    caps = (width * height).where((width > 0) & (height > 0), DEFAULT_MAX_PIXELS)
    shas = records["sha256"].fillna("").astype(str)
    return [(str(p), sha, int(cap)) for p, sha, cap in zip(manifest.absolute_paths(), shas, caps)]


def _is_complete(path: Path, shape: tuple[int, ...]) -> bool:
    """A usable cache file: readable header with the expected shape and the full data length."""
    if not path.exists():
        return False
    try:
        cached = np.load(path, mmap_mode="r")
    except (ValueError, OSError):
        return False  # truncated or foreign file under our name: rebuild it
    return cached.shape == shape and cached.dtype == np.uint8


def _decode_into(target: str, paths: list[_Row], spec: PreprocessSpec, workers: int | None) -> None:
    workers = workers or os.cpu_count() or 1
    progress = Progress("decoding the image cache", len(paths), log, unit="images")
    if workers == 1 or len(paths) < _MIN_IMAGES_FOR_PROCESSES:
        for start, chunk in _chunks(paths):
            _decode_chunk(target, start, chunk, spec)
            progress.advance(len(chunk))
    else:
        _decode_in_processes(target, paths, spec, workers, progress)
    progress.finish()


def _decode_in_processes(target: str, paths: list[_Row], spec: PreprocessSpec, workers: int, progress: Progress) -> None:
    """One task per chunk of rows; progress advances as chunks complete, in whatever order they do."""
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method)) as pool:
        tasks = {pool.submit(_decode_chunk, target, start, chunk, spec): len(chunk) for start, chunk in _chunks(paths)}
        try:
            for task in as_completed(tasks):
                task.result()
                progress.advance(tasks[task])
        except BaseException:
            for task in tasks:
                task.cancel()  # one bad file fails the build; do not decode the rest first
            raise


def _chunks(paths: list[_Row]) -> list[tuple[int, list[_Row]]]:
    """(first row, paths) of each chunk of _CHUNK rows."""
    return [(start, paths[start : start + _CHUNK]) for start in range(0, len(paths), _CHUNK)]


def _decode_chunk(target: str, start: int, paths: list[_Row], spec: PreprocessSpec) -> None:
    """Decode `paths` into rows start.. of the .npy at `target` (runs in a worker process or in-process)."""
    out = np.load(target, mmap_mode="r+")
    for offset, row in enumerate(paths):
        out[start + offset] = spec.resize(_read_validated(*row))
    out.flush()


def _read_validated(path: str, sha: str, max_pixels: int):
    """The RGB image of `path` if its bytes are the ones the manifest recorded; one read, hashed and
    decoded from the same bytes. Errors are CacheBuildError with a plain message: ImageRejected does
    not survive pickling back from a worker process."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CacheBuildError(f"cannot build the decoded cache: cannot read {path} ({exc})") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha:
        recorded = f"{sha[:12]}…" if sha else "no hash (the manifest was not validated)"
        raise CacheBuildError(
            f"cannot build the decoded cache: {path} changed after validation (sha256 {actual[:12]}…, "
            f"the manifest recorded {recorded}); validate the data again"
        )
    try:
        image, _ = open_image(data, max_pixels=max_pixels, source=path)
    except ImageRejected as exc:
        raise CacheBuildError(f"cannot build the decoded cache: {exc}") from None
    return image
