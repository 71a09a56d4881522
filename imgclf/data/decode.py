"""Decoding an image file or upload into an RGB PIL image, or a reason why not.

Used by validation (to quarantine), by the cache (to decode once) and by the service (to answer 400),
so every entry point accepts and rejects the same files for the same reasons and turns odd but valid
images (CMYK, 16-bit, palette + transparency, grey + alpha, EXIF-rotated, animated) into the same
RGB pixels.

Caps (`DecodeLimits`) are checked on the header's size before a pixel is decoded: training keeps the
caps of its ValidationConfig, the service uses the stricter `SERVING_LIMITS`. When the caller knows
the size it will resize to, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling,
`Image.draft`), never below that size; the service does, training does not (its pixels stay as they
were cached).

The format comes from the file's first bytes, never from its name: a PNG named `.jpg` is a PNG, a
text file named `.png` is not an image. Only the formats below are opened, so PIL's long tail of
plugins (EPS hands files to Ghostscript, TGA has no signature) never sees user files.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

DEFAULT_MAX_PIXELS = 40_000_000
_STRIP_PIXELS = 1 << 20  # 16-bit images are scaled to 8 bits a strip of about this many pixels at a time

# format -> (leading-byte signatures, PIL module, opener); the opener parses the header only.
_FORMATS: dict[str, tuple[tuple[bytes, ...], str, str]] = {
    "JPEG": ((b"\xff\xd8\xff",), "JpegImagePlugin", "jpeg_factory"),  # also MPO (multi-picture JPEG)
    "PNG": ((b"\x89PNG\r\n\x1a\n",), "PngImagePlugin", "PngImageFile"),
    "GIF": ((b"GIF87a", b"GIF89a"), "GifImagePlugin", "GifImageFile"),
    "BMP": ((b"BM",), "BmpImagePlugin", "BmpImageFile"),
    "TIFF": ((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), "TiffImagePlugin", "TiffImageFile"),
    "WEBP": ((b"RIFF",), "WebPImagePlugin", "WebPImageFile"),  # plus b"WEBP" at offset 8, see sniff_format
}
IMAGE_FORMATS = tuple(_FORMATS)

REASONS = (
    "zero_bytes",
    "not_an_image",
    "truncated",
    "corrupt",
    "decompression_bomb",
    "too_small",
    "unreadable_mode",
    "too_large",  # a side above DecodeLimits.max_side (validation's size-range check uses it too)
    "extreme_aspect_ratio",  # long side / short side above DecodeLimits.max_aspect
)

# Header / decoder messages that mean "a pixel layout PIL cannot read" rather than damage.
_MODE_HINTS = ("mode", "pixel depth", "bit depth", "bitfields", "data organization", "samples per pixel")
_TRUNCATION_HINTS = ("truncated", "end of file", "unpack requires a buffer", "not enough data", "premature end")


class ImageRejected(ValueError):
    """An input that is not a usable image. `reason` is one of REASONS; `detail` says what was found."""

    def __init__(self, reason: str, detail: str, source: str = "") -> None:
        self.reason = reason
        self.detail = detail
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{reason}: {detail}")


@dataclass(frozen=True)
class DecodeLimits:
    """Caps on the size an image's header declares, checked before any pixel is decoded.

    The defaults are training's (only the pixel cap and a 1-px side: a strange but real photo is
    kept); `SERVING_LIMITS` is what the service accepts from strangers. None switches a cap off.
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_side: int | None = None
    min_side: int = 1
    max_aspect: float | None = None

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.min_side < 1:
            raise ValueError(f"DecodeLimits: max_pixels and min_side must be >= 1, got {self}")
        if self.max_side is not None and self.max_side < self.min_side:
            raise ValueError(f"DecodeLimits: max_side {self.max_side} is below min_side {self.min_side}")
        if self.max_aspect is not None and self.max_aspect < 1:
            raise ValueError(f"DecodeLimits: max_aspect (long side / short side) must be >= 1, got {self.max_aspect}")

    def check(self, width: int, height: int, source: str = "") -> None:
        """Raise ImageRejected if a `width` x `height` image breaks a cap."""
        size = f"{width}x{height}"
        if width * height > self.max_pixels:
            detail = f"{size} = {width * height} pixels exceeds the cap of {self.max_pixels}"
            raise ImageRejected("decompression_bomb", detail, source)
        if self.max_side is not None and max(width, height) > self.max_side:
            raise ImageRejected("too_large", f"{size} has a side above the maximum of {self.max_side} px", source)
        if min(width, height) < self.min_side:
            raise ImageRejected("too_small", f"{size} is below the minimum side of {self.min_side} px", source)
        if self.max_aspect is not None and max(width, height) > self.max_aspect * min(width, height):
            detail = f"{size} has an aspect ratio above the maximum of {self.max_aspect:g}:1"
            raise ImageRejected("extreme_aspect_ratio", detail, source)


# What the service accepts: no 40-Mpx decodes per request, no 10,000,000x4 strips.
SERVING_LIMITS = DecodeLimits(max_pixels=25_000_000, max_side=12_000, min_side=8, max_aspect=20.0)


@dataclass(frozen=True)
class ImageInfo:
    """What the file declares (format, mode and stored size, before EXIF rotation)."""

    format: str
    mode: str
    width: int
    height: int


def sniff_format(head: bytes) -> str | None:
    """The accepted format whose signature starts `head` (the file's first 16 bytes), else None."""
    for name, (signatures, _, _) in _FORMATS.items():
        if head.startswith(signatures) and (name != "WEBP" or head[8:12] == b"WEBP"):
            return name
    return None


def declared_pixels(data: bytes) -> int | None:
    """Width x height from the header alone (no pixel decoded), or None when the header is unreadable."""
    fmt = sniff_format(data[:16])
    if fmt is None:
        return None
    _, module, opener = _FORMATS[fmt]
    try:
        width, height = getattr(importlib.import_module(f"PIL.{module}"), opener)(io.BytesIO(data)).size
    except Exception:  # open_image says why, with the right reason
        return None
    return width * height


def open_image(
    data: bytes | Path | str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: int = 1,
    limits: DecodeLimits | None = None,
    draft_size: tuple[int, int] | None = None,
    source: str = "",
) -> tuple[Image.Image, ImageInfo]:
    """Decode `data` (bytes or a file path) to RGB: first frame, EXIF orientation applied.

    The size is read from the header and checked against `limits` (when None: `max_pixels` and
    `min_size`, training's caps) before a single pixel is decoded, so a decompression bomb costs a
    header parse. `draft_size` lets a JPEG decode at a reduced scale whose size stays >= it (the
    image is then smaller than `info`'s size). Raises ImageRejected with a reason from REASONS;
    reading a path may also raise OSError.
    """
    if isinstance(data, (str, Path)):
        source = source or str(data)
        data = Path(data).read_bytes()
    if len(data) == 0:
        raise ImageRejected("zero_bytes", "the file is empty", source)
    fmt = sniff_format(data[:16])
    if fmt is None:
        raise ImageRejected("not_an_image", "no known image format in the file's bytes", source)
    _, module, opener = _FORMATS[fmt]
    try:
        image = getattr(importlib.import_module(f"PIL.{module}"), opener)(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # GIF frames are checked by PIL itself while parsing
        raise ImageRejected("decompression_bomb", str(exc), source) from None
    except Exception as exc:  # plugins raise SyntaxError, ValueError, OSError, ... on bad headers
        raise ImageRejected(_failure_reason(exc), f"{fmt} header unreadable ({_describe(exc)})", source) from None
    width, height = image.size
    (limits or DecodeLimits(max_pixels=max_pixels, min_side=min_size)).check(width, height, source)
    info = ImageInfo(format=str(image.format), mode=image.mode, width=width, height=height)
    try:
        if draft_size is not None and fmt == "JPEG":
            image.draft("RGB", draft_size)  # libjpeg scales by 1/2, 1/4 or 1/8 while keeping size >= draft_size
        image.load()  # the first frame only: animated GIF/WebP/PNG and multi-page TIFF stop here
    except Exception as exc:
        raise ImageRejected(_failure_reason(exc), f"decoding {fmt} failed ({_describe(exc)})", source) from None
    try:
        return to_rgb(image), info
    except Exception as exc:
        detail = f"cannot convert {fmt} mode {image.mode} to RGB ({_describe(exc)})"
        raise ImageRejected("unreadable_mode", detail, source) from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Normalise a decoded image to 8-bit RGB, the same way for every entry point.

    EXIF orientation is applied; 16/32-bit grey is scaled from 0..65535 (not clipped at 255);
    transparency (RGBA, LA, PA, palette with a transparent index) is composited onto black.
    """
    with contextlib.suppress(Exception):  # unreadable EXIF: the pixels are still good, keep them as stored
        ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of an image without a rotation
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        image = _grey16_to_l(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def _grey16_to_l(image: Image.Image) -> Image.Image:
    """16-bit (or 32-bit integer) grey -> 8-bit "L": round(v / 257) of v clipped to 0..65535.

    PIL's own convert("L") clips at 255 (a 16-bit scan turns white). Integer arithmetic on strips of
    rows: the largest temporary is one strip, never a float copy of the whole image.
    """
    width, height = image.size
    out = np.empty((height, width), dtype=np.uint8)
    rows = max(1, _STRIP_PIXELS // max(1, width))
    for top in range(0, height, rows):
        strip = np.asarray(image.crop((0, top, width, min(height, top + rows))))
        if strip.dtype.kind == "i":  # mode "I" is signed 32-bit; 16-bit modes are already 0..65535
            strip = np.clip(strip, 0, 65535)
        out[top : top + rows] = (strip.astype(np.uint32) + 128) // 257  # == round(v / 257), no ties
    return Image.fromarray(out, "L")


def _failure_reason(exc: BaseException) -> str:
    """Sort a PIL exception into truncated / unreadable_mode / corrupt by its type and message."""
    cause = exc.__cause__ or exc.__context__
    text = f"{exc} {cause or ''}".lower()
    if isinstance(exc, (EOFError, struct.error)) or isinstance(cause, (EOFError, struct.error)):
        return "truncated"
    if any(hint in text for hint in _TRUNCATION_HINTS):
        return "truncated"
    if any(hint in text for hint in _MODE_HINTS) or ("decoder" in text and "not available" in text):
        return "unreadable_mode"
    return "corrupt"


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
