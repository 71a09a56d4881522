"""The one copy of a user's image the product keeps: decoded pixels re-encoded as a bare PNG (no EXIF,
ICC profile, text chunks or other metadata), downscaled so its longer side is at most `max_side`."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps


def clean_png(image: Image.Image | np.ndarray, max_side: int) -> tuple[bytes, int, int]:
    """PNG bytes, width, height. A PIL image is turned upright by its EXIF orientation first (as the
    service decodes it); only the RGB pixels go into a new image, so nothing of the source's info travels."""
    if isinstance(image, Image.Image):
        pixels = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    else:
        pixels = np.asarray(image)
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {pixels.dtype} {pixels.shape}")
    bare = Image.fromarray(np.ascontiguousarray(pixels))
    if max(bare.size) > max_side:
        bare.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    bare.save(out, format="PNG")
    return out.getvalue(), bare.width, bare.height
