"""Decoding an image file or upload into an RGB PIL image, or a reason why not.

Used by validation (to quarantine), by the cache (to decode once) and by the service (to answer 400),
so every entry point accepts and rejects the same files for the same reasons.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

# We enforce our own pixel cap *before* decoding; PIL's global cap would raise mid-way instead.
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = 40_000_000


class ImageRejected(ValueError):
    """An input that is not a usable image. `reason` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str, source: str = "") -> None:
        self.reason = reason
        self.detail = detail
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{reason}: {detail}")


@dataclass(frozen=True)
class ImageInfo:
    format: str
    mode: str
    width: int
    height: int


def open_image(
    data: bytes | Path | str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: int = 1,
    source: str = "",
) -> tuple[Image.Image, ImageInfo]:
    """Fully decode `data` (bytes or a file path) to RGB with EXIF orientation applied.

    Raises ImageRejected with reason one of: zero_bytes, not_an_image, decompression_bomb,
    too_small, truncated, corrupt.
    """
    if isinstance(data, (str, Path)):
        source = source or str(data)
        data = Path(data).read_bytes()
    if len(data) == 0:
        raise ImageRejected("zero_bytes", "the file is empty", source)
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected("not_an_image", "no known image format in the file's bytes", source) from None
    except Exception as exc:  # PIL raises many types on malformed headers
        raise ImageRejected("corrupt", f"unreadable header ({exc})", source) from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejected(
            "decompression_bomb", f"{width}x{height} = {width * height} pixels exceeds the cap of {max_pixels}", source
        )
    if min(width, height) < min_size:
        raise ImageRejected("too_small", f"{width}x{height} is below the minimum side of {min_size} px", source)
    info = ImageInfo(format=str(image.format), mode=image.mode, width=width, height=height)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.seek(0)  # animated formats: first frame
            image.load()
    except OSError as exc:
        reason = "truncated" if "truncated" in str(exc).lower() or "end of file" in str(exc).lower() else "corrupt"
        raise ImageRejected(reason, f"decoding failed ({exc})", source) from None
    except Exception as exc:
        raise ImageRejected("corrupt", f"decoding failed ({exc})", source) from None
    return _to_rgb(image), info


def _to_rgb(image: Image.Image) -> Image.Image:
    """Normalise any mode (CMYK, 16-bit, palette, grey+alpha, ...) to RGB on black, orientation applied."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: scale to 8 bits instead of clipping
        import numpy as np

        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        image = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype("uint8"), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
