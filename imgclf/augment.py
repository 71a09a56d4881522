"""Augmentation policy (a typed, serialisable artifact) -> torchvision.transforms.v2 pipeline.

The pipeline runs on uint8 CHW tensors taken from the decoded cache, before normalisation, so the
PreprocessSpec stays the only normalisation step.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AugmentPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hflip: float = Field(0.0, ge=0, le=1, description="probability of a horizontal flip")
    vflip: float = Field(0.0, ge=0, le=1, description="probability of a vertical flip")
    rotation_degrees: float = Field(0.0, ge=0, le=180)
    scale_min: float = Field(1.0, gt=0, le=1, description="RandomResizedCrop minimum area; 1.0 disables it")
    brightness: float = Field(0.0, ge=0)
    contrast: float = Field(0.0, ge=0)
    saturation: float = Field(0.0, ge=0)
    noise_std: float = Field(0.0, ge=0, description="Gaussian noise std on the 0..1 pixel scale")
    erasing: float = Field(0.0, ge=0, le=1, description="probability of random erasing (Cutout)")

    def build(self, image_size: int):
        """The per-image transform: uint8 (3, H, W) tensor -> uint8 (3, H, W) tensor."""
        import torch
        from torchvision.transforms import v2

        ops: list = []
        if self.scale_min < 1.0:
            ops.append(v2.RandomResizedCrop(image_size, scale=(self.scale_min, 1.0), antialias=True))
        if self.hflip:
            ops.append(v2.RandomHorizontalFlip(self.hflip))
        if self.vflip:
            ops.append(v2.RandomVerticalFlip(self.vflip))
        if self.rotation_degrees:
            ops.append(v2.RandomRotation(self.rotation_degrees))
        if self.brightness or self.contrast or self.saturation:
            ops.append(v2.ColorJitter(self.brightness, self.contrast, self.saturation))
        if self.noise_std or self.erasing:
            ops.append(v2.ToDtype(torch.float32, scale=True))
            if self.noise_std:
                ops.append(v2.GaussianNoise(sigma=self.noise_std))
            if self.erasing:
                ops.append(v2.RandomErasing(self.erasing))
            ops.append(v2.ToDtype(torch.uint8, scale=True))
        return v2.Compose(ops) if ops else v2.Identity()
