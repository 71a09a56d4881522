"""The one preprocessing definition.

A `PreprocessSpec` is saved inside every model bundle and ONNX file; training (through the decoded
cache), evaluation, export and serving all call these methods, so a model always sees the pixels it
was trained on. Plain numpy + PIL: the service uses it without importing torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

ResizeMode = Literal["squash", "center_crop", "letterbox"]
_DRAFT_MARGIN = 4  # decode at >= 4x the output side: the final resize still averages (within JPEG q90's own error)
_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


@dataclass(frozen=True)
class PreprocessSpec:
    """How an RGB image becomes the model's input tensor."""

    image_size: int = 64
    resize_mode: ResizeMode = "squash"
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    channel_order: Literal["RGB", "BGR"] = "RGB"

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise ValueError(f"PreprocessSpec.image_size must be >= 8, got {self.image_size}")
        if self.resize_mode not in ("squash", "center_crop", "letterbox"):
            raise ValueError(
                f"PreprocessSpec.resize_mode {self.resize_mode!r} is not one of squash, center_crop, letterbox"
            )
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        return cls(**data)

    # -- pixels ----------------------------------------------------------------------------------
    def resize(self, image: Image.Image) -> np.ndarray:
        """RGB PIL image -> uint8 array (size, size, 3). This is what the decoded cache stores.

        No intermediate is larger than the input or the output: see `_center_crop`; squash and
        letterbox are one PIL resize, which (Pillow 13) shrinks a tall strip's height first.
        """
        if image.mode != "RGB":
            image = image.convert("RGB")
        size = self.image_size
        resample = _RESAMPLE[self.interpolation]
        if self.resize_mode == "squash":
            out = image.resize((size, size), resample)
        elif self.resize_mode == "center_crop":
            out = self._center_crop(image, resample)
        else:  # letterbox: keep aspect ratio, pad with black (one scale for both axes: no big intermediate)
            w, h = image.size
            scale = size / max(w, h)
            inner = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)
            out = Image.new("RGB", (size, size))
            out.paste(inner, ((size - inner.width) // 2, (size - inner.height) // 2))
        return np.asarray(out, dtype=np.uint8)

    def _center_crop(self, image: Image.Image, resample: int) -> Image.Image:
        """Short side scaled to image_size, then the centre square.

        When the scaled whole image holds no more pixels than the source (any downscale), it is
        resized then cropped, bit-identical to every cache made before. Otherwise (an upscale: a
        10,000,000x4 strip would become 41 GB) only the crop's source pixels are resized, with PIL's
        `box` at the same filter positions; the pixels agree within 1 level (bilinear).
        """
        size = self.image_size
        w, h = image.size
        scale = size / min(w, h)
        scaled_w, scaled_h = max(size, round(w * scale)), max(size, round(h * scale))
        left, top = (scaled_w - size) // 2, (scaled_h - size) // 2
        if scaled_w * scaled_h <= w * h:
            return image.resize((scaled_w, scaled_h), resample).crop((left, top, left + size, top + size))
        sx, sy = w / scaled_w, h / scaled_h
        return image.resize((size, size), resample, box=(left * sx, top * sy, (left + size) * sx, (top + size) * sy))

    def draft_size(self) -> tuple[int, int]:
        """The smallest decoded size this resize loses nothing from: a JPEG decoded at 1/2..1/8
        scale keeps both sides >= this (the service decodes so; training decodes at full size)."""
        side = self.image_size * _DRAFT_MARGIN
        return (side, side)

    def normalize(self, batch: Any) -> Any:
        """uint8 batch (N, H, W, 3) numpy or (N, 3, H, W) torch -> float32 (N, 3, H, W), normalised.

        numpy input is channels-last (as cached); torch input is already channels-first (as augmented)
        and stays on its device. The torch branch uses only the tensor's own methods, so this module
        never imports torch (the service uses it without torch).
        """
        mean = np.asarray(self.mean, dtype=np.float32) * 255.0
        inv_std = 1.0 / (np.asarray(self.std, dtype=np.float32) * 255.0)
        if isinstance(batch, np.ndarray):  # uint8 made channels-first first, then two passes in place
            x = batch.transpose(0, 3, 1, 2)
            if self.channel_order == "BGR":
                x = x[:, ::-1]
            x = np.ascontiguousarray(x).astype(np.float32)
            x -= mean[None, :, None, None]
            x *= inv_std[None, :, None, None]
            return x
        x = batch.float()
        if self.channel_order == "BGR":
            x = x.flip(1)
        return (x - x.new_tensor(mean.tolist()).view(1, 3, 1, 1)) * x.new_tensor(inv_std.tolist()).view(1, 3, 1, 1)

    def prepare(self, images: list[Image.Image]) -> np.ndarray:
        """Decoded RGB images -> model input, float32 (N, 3, H, W)."""
        return self.normalize(np.stack([self.resize(img) for img in images]))
