"""The augmentation policy drawn on a few training images: the grid the augment step shows in the dashboard."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from imgclf.augment.policy import AugmentPolicy
from imgclf.data.decode import open_image
from imgclf.data.manifest import DatasetManifest
from imgclf.preprocess import PreprocessSpec


def preview_images(manifest: DatasetManifest, count: int = 8, size: int = 96) -> np.ndarray:
    """`count` training images as uint8 (count, size, size, 3), one class after another so the
    preview shows as many classes as it can. Deterministic: rows are taken in sha256 order."""
    if "split" not in manifest.records.columns:
        raise ValueError("the augmentation preview needs a split manifest (a `split` column); run split first")
    train = manifest.records[manifest.records["split"] == "train"].sort_values(["sha256", "path"])
    if train.empty:
        raise ValueError("the augmentation preview needs at least one training image; the train split is empty")
    train = train.assign(_rank=train.groupby("label").cumcount()).sort_values(["_rank", "label"]).head(count)
    spec = PreprocessSpec(image_size=size)
    picked = DatasetManifest(manifest.root, train.drop(columns="_rank"))
    return np.stack([spec.resize(open_image(path)[0]) for path in picked.absolute_paths()])


def preview_grid(
    images: np.ndarray | Sequence[np.ndarray], policy: AugmentPolicy, rows: int = 4, seed: int = 0, pad: int = 2
) -> Image.Image:
    """A grid of augmented images: one column per input image (uint8 HWC, all one square size), one
    row per random draw of `policy`; when the policy mixes, the last row is a Mixup/CutMix batch.

    Size: width = cols * size + (cols + 1) * pad, height = rows * size + (rows + 1) * pad.
    Seeded and side-effect free: torch's global generator is restored afterwards.
    """
    import torch

    batch = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
    if batch.ndim != 4 or batch.shape[3] != 3 or batch.shape[1] != batch.shape[2]:
        raise ValueError(f"preview images must be square uint8 (H, W, 3) arrays of one size, got {batch.shape}")
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    cols, size = batch.shape[0], batch.shape[1]
    source = torch.from_numpy(batch).permute(0, 3, 1, 2)
    transform = policy.build(size)
    mix = policy.build_mix(num_classes=cols)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        drawn = [torch.stack([transform(image) for image in source]) for _ in range(rows)]
        if mix is not None:
            drawn[-1], _ = mix(drawn[-1], torch.arange(cols))
    grid = np.full((rows * size + (rows + 1) * pad, cols * size + (cols + 1) * pad, 3), 255, dtype=np.uint8)
    for r, row in enumerate(drawn):
        for c, image in enumerate(row.permute(0, 2, 3, 1).numpy()):
            top, left = pad + r * (size + pad), pad + c * (size + pad)
            grid[top : top + size, left : left + size] = image
    return Image.fromarray(grid, "RGB")
