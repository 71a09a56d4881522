"""Perceptual hashes and near-duplicate search, so copies of one picture never straddle train and test.

The hash is the classic DCT pHash: grey 32x32 -> 2-D DCT -> the 8x8 lowest frequencies, one bit per
coefficient (above or below their median). Brightness, contrast, re-encoding and resizing move few
bits; different pictures differ in about half of them.

Near-duplicate search is multi-index hashing: split the 64 bits into `threshold + 1` bands. Two hashes
within Hamming distance `threshold` agree exactly on at least one band (pigeonhole), so only hashes
sharing a band value are compared. With bands of 8+ bits on unrelated pictures that is a small fraction
of all pairs, instead of n^2/2; the cost grows with the size of the largest band bucket, not with n^2.
Chosen over a BK-tree because it is a few vectorised numpy passes, with no per-item Python work.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from imgclf.data.decode import open_image

HASH_BITS = 64
MAX_THRESHOLD = 16  # 17 bands of under 4 bits: the index stops pruning anything beyond this

_SIDE = 32
_LOW = 8


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II basis: `D @ x` is the DCT of the column vector x."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


_DCT = _dct_matrix(_SIDE)
_CHUNK = 1024  # files in flight at a time
_WEIGHTS = (np.uint64(1) << np.arange(HASH_BITS, dtype=np.uint64)).astype(np.uint64)


def phash(image: Image.Image) -> int:
    """The 64-bit DCT perceptual hash of a PIL image, as a Python int."""
    grey = np.asarray(image.convert("L").resize((_SIDE, _SIDE), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT @ grey @ _DCT.T)[:_LOW, :_LOW].ravel()
    bits = low > np.median(low)
    return int((bits.astype(np.uint64) * _WEIGHTS).sum(dtype=np.uint64))


def phash_files(paths: Sequence[str | Path], workers: int | None = None) -> np.ndarray:
    """pHashes (uint64) of image files, decoded the same way as validation and the cache decode them."""

    def one(path: str | Path) -> int:
        image, _ = open_image(path)
        return phash(image)

    hashes = np.empty(len(paths), dtype=np.uint64)
    with ThreadPoolExecutor(max_workers=workers or (os.cpu_count() or 2)) as pool:
        for start in range(0, len(paths), _CHUNK):  # map() submits every task at once: a future per file
            hashes[start : start + _CHUNK] = list(pool.map(one, paths[start : start + _CHUNK]))
    return hashes


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise Hamming distance between two uint64 arrays."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def near_duplicate_pairs(hashes: np.ndarray, threshold: int) -> np.ndarray:
    """Index pairs (i, j), i < j, whose hashes are within `threshold` bits, as an (m, 2) int64 array.

    Identical hashes are paired through one representative each (i is the first row with that hash),
    so a thousand copies of one picture give 999 pairs, not half a million.
    """
    if not 0 <= threshold <= MAX_THRESHOLD:
        raise ValueError(f"near-duplicate threshold must be in 0..{MAX_THRESHOLD} bits, got {threshold}")
    hashes = np.asarray(hashes, dtype=np.uint64)
    unique, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    pairs = np.stack([first[inverse], np.arange(len(hashes))], axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    if threshold > 0 and len(unique) > 1:
        pairs = np.concatenate([pairs, first[_close_unique_pairs(unique, threshold)]])
    return np.unique(np.sort(pairs, axis=1).astype(np.int64), axis=0)


def _close_unique_pairs(unique: np.ndarray, threshold: int) -> np.ndarray:
    """Pairs of positions in `unique` (distinct hashes) within `threshold` bits, via band buckets."""
    bands = threshold + 1
    edges = np.linspace(0, HASH_BITS, bands + 1).round().astype(int)
    found = []
    for lo, hi in itertools.pairwise(edges):
        keys = (unique >> np.uint64(lo)) & np.uint64((1 << int(hi - lo)) - 1)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        # Every pair inside a bucket of equal keys is (order[k], order[k + d]) for some offset d >= 1.
        for d in range(1, len(order)):
            same = sorted_keys[:-d] == sorted_keys[d:]
            if not same.any():
                break
            i, j = order[:-d][same], order[d:][same]
            close = hamming(unique[i], unique[j]) <= threshold
            found.append(np.stack([i[close], j[close]], axis=1))
    return np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)
