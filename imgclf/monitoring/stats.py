"""Cheap per-image statistics that shift when the images a model sees change (darker, washed out,
blurred, greyscale, overexposed), computed on the uint8 RGB image at model input size, before
normalisation: the same array the service and the reference profile both hold.

Pure numpy and integer arithmetic where it can be, because it runs once per answered image.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # Rec. 601
CLIP_LOW, CLIP_HIGH = 2, 253


@dataclass(frozen=True)
class ImageStatistics:
    """All in [0, 1] except `sharpness` (>= 0) and `entropy` (bits, 0..8).

    brightness: mean luma / 255. contrast: standard deviation of luma / 255. saturation: mean HSV
    saturation ((max - min) / max per pixel, 0 for black). sharpness: variance of the 4-neighbour
    Laplacian of luma scaled to [0, 1], over interior pixels; a mean over pixels, so it does not grow
    with the pixel count (compare images at the same model input size: resizing changes it).
    entropy: Shannon entropy of the 256-bin luma histogram. clipped: share of pixels with luma
    <= 2 or >= 253 (crushed shadows or blown highlights).
    """

    brightness: float
    contrast: float
    saturation: float
    sharpness: float
    entropy: float
    clipped: float


STATISTICS: tuple[str, ...] = tuple(f.name for f in fields(ImageStatistics))


def _check(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        raise TypeError(
            f"image statistics need a uint8 numpy array, got {type(rgb).__name__} {getattr(rgb, 'dtype', '')}"
        )
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"image statistics need an (H, W, 3) RGB image, got shape {rgb.shape}")


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Luma 0..255 as float32 (H, W)."""
    return rgb @ _LUMA_WEIGHTS


def _saturation(rgb: np.ndarray) -> float:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    high = np.maximum(np.maximum(r, g), b)
    low = np.minimum(np.minimum(r, g), b)
    spread = (high - low).astype(np.float32)
    divisor = np.maximum(high, 1).astype(np.float32)  # high == 0 means spread == 0: saturation 0
    return float((spread / divisor).mean())


def _sharpness(luma: np.ndarray) -> float:
    if luma.shape[0] < 3 or luma.shape[1] < 3:
        return 0.0
    y = luma
    laplacian = y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4 * y[1:-1, 1:-1]
    return float(laplacian.var(dtype=np.float64) / (255.0 * 255.0))


def _entropy_bits(histogram: np.ndarray) -> float:
    p = histogram[histogram > 0] / histogram.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: no "-0.0" for a flat image


def image_statistics(rgb: np.ndarray) -> ImageStatistics:
    """The statistics of one (H, W, 3) uint8 RGB image."""
    _check(rgb)
    luma = _luma(rgb)
    histogram = np.bincount((luma + 0.5).astype(np.uint8).ravel(), minlength=256)
    levels = np.arange(256, dtype=np.float64)
    count = luma.size
    mean = float(histogram @ levels) / count
    variance = max(float(histogram @ (levels * levels)) / count - mean * mean, 0.0)
    clipped = int(histogram[: CLIP_LOW + 1].sum() + histogram[CLIP_HIGH:].sum())
    return ImageStatistics(
        brightness=mean / 255.0,
        contrast=variance**0.5 / 255.0,
        saturation=_saturation(rgb),
        sharpness=_sharpness(luma),
        entropy=_entropy_bits(histogram),
        clipped=clipped / count,
    )


def image_statistics_batch(images: np.ndarray) -> dict[str, np.ndarray]:
    """Column -> (N,) float64 for a (N, H, W, 3) uint8 batch (a reference profile's columns)."""
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise ValueError(f"expected an (N, H, W, 3) uint8 batch, got shape {getattr(images, 'shape', None)}")
    rows = [image_statistics(image) for image in images]
    return {name: np.array([getattr(row, name) for row in rows], dtype=np.float64) for name in STATISTICS}
