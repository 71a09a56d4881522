"""The AugmentPolicy's per-image torchvision v2 ops applied to a whole uint8 batch in a few batched ops.

Why batched: torch ops on one small image are mostly dispatch overhead, so the policy's v2 pipeline
run image by image on cached tensors is barely faster than ImageFolder decoding and augmenting PIL
images every epoch. Crop, flips and rotation fused into one resample plus batched colour arithmetic
is what makes the cached loader several times faster than that baseline. `python bench/data_loading.py`
measures both against it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode, v2

_GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
_CHUNK = 16


class BatchAugment:
    """A torchvision v2 per-image pipeline applied to a uint8 (N, 3, H, W) batch in a few batched ops.

    Each image gets its own random parameters, drawn as torchvision draws them. RandomResizedCrop,
    flips and RandomRotation (zero fill) fuse into one bilinear resample; ColorJitter without hue,
    GaussianNoise and RandomErasing with a fixed value are batched too. Differences from calling the
    pipeline per image, none of which changes what the model sees in distribution: rotation is
    bilinear (v2 defaults to nearest), ColorJitter's brightness, contrast and saturation are one
    linear map clipped once (v2 clips after each, in random order), and rounding happens once at the end.
    Any other op runs per image, seeded from the batch's generator, so results stay reproducible.
    """

    def __init__(self, transform: v2.Transform) -> None:
        self.stages = _compile(_flatten(transform))

    @classmethod
    def from_policy(cls, policy, image_size: int) -> BatchAugment:
        """From an imgclf.augment.AugmentPolicy, built for the cache's image size."""
        return cls(policy.build(image_size))

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"BatchAugment expects uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        if not self.stages:
            return images
        # a few images at a time: their float working set stays in the CPU's L2 cache, faster per
        # image than a whole batch at once
        return torch.cat([self._augment(chunk, generator) for chunk in images.split(_CHUNK)])

    def _augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # float NCHW on the 0..255 scale throughout (unit: 255 while the pipeline is in float [0, 1]);
        # contiguous NCHW, not the cache's channels-last view: grid_sample is faster on it
        x, unit = images.float().contiguous(), 1.0
        for stage in self.stages:
            x, unit = stage(x, unit, generator)
        if unit != 1.0:
            raise ValueError(
                "the augmentation pipeline must end with uint8 images (add ToDtype(torch.uint8, scale=True))"
            )
        return x.clamp_(0, 255).round_().to(torch.uint8)


def _flatten(transform) -> list:
    if isinstance(transform, v2.Compose):
        return [op for t in transform.transforms for op in _flatten(t)]
    return [] if isinstance(transform, v2.Identity) else [transform]


def _compile(ops: list) -> list:
    """Group consecutive ops into batched stages; ops without a batched form become per-image stages."""
    stages: list = []
    for op in ops:
        stage = _batched(op)
        if isinstance(stage, _Geometry) and stages and isinstance(stages[-1], _Geometry):
            stages[-1].ops.extend(stage.ops)
        elif stage is None and stages and isinstance(stages[-1], _PerImage):
            stages[-1].ops.append(op)
        else:
            stages.append(stage if stage is not None else _PerImage([op]))
    return stages


def _zero_fill(fill) -> bool:
    if fill is None or isinstance(fill, (int, float)):
        return not fill
    return isinstance(fill, (list, tuple)) and all(v == 0 for v in fill)


def _batched(op):
    if isinstance(op, v2.RandomResizedCrop) and InterpolationMode(op.interpolation) == InterpolationMode.BILINEAR:
        return _Geometry([op])
    if isinstance(op, (v2.RandomHorizontalFlip, v2.RandomVerticalFlip)):
        return _Geometry([op])
    if isinstance(op, v2.RandomRotation) and not op.expand and op.center is None and _zero_fill(op.fill):
        return _Geometry([op])
    if isinstance(op, v2.ColorJitter) and op.hue is None:
        return _Colour(op.brightness, op.contrast, op.saturation)
    if isinstance(op, v2.ToDtype) and op.scale and op.dtype in (torch.float32, torch.uint8):
        return _ToDtype(op.dtype)
    if isinstance(op, v2.GaussianNoise):
        return _Noise(op.mean, op.sigma, op.clip)
    if isinstance(op, v2.RandomErasing) and op.value is not None and len(op.value) in (1, 3):
        return _Erase(op.p, op.scale, op.ratio, op.value)
    return None


def _uniform(n: int, low: float, high: float, g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(n, *shape, generator=g) * (high - low) + low


def _first_valid(valid: torch.Tensor, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per row, the values at the first valid try (torchvision's 10-tries loops), and whether any was."""
    pick = valid.to(torch.uint8).argmax(1, keepdim=True)
    return (valid.any(1), *(v.gather(1, pick).squeeze(1) for v in values))


class _Geometry:
    """Crops, flips and rotations fused into one affine map per image, sampled once (bilinear)."""

    def __init__(self, ops: list) -> None:
        self.ops = ops

    def __call__(self, x: torch.Tensor, unit: float, g: torch.Generator):
        n, _, h, w = x.shape
        chain = torch.eye(3).repeat(n, 1, 1)  # output coords -> input coords, composed from the last op back
        masks = []
        for matrix, fills in reversed([self._matrix(op, n, h, w, g) for op in self.ops]):
            chain = matrix @ chain
            if fills:  # points outside this op's input are its zero fill
                masks.append(chain)
        grid = _grid(chain, h, w).permute(2, 0, 1, 3).contiguous()
        # clamping to the outermost pixel centres is padding_mode="border" (edge pixels repeat, as when
        # resizing a crop), faster than asking grid_sample for it
        grid[..., 0].clamp_(-1 + 1 / w, 1 - 1 / w)
        grid[..., 1].clamp_(-1 + 1 / h, 1 - 1 / h)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        for chain_at_op in masks:
            outside = _grid(chain_at_op, h, w).abs().amax(-1) > 1  # (H, W, N)
            out.masked_fill_(outside.permute(2, 0, 1)[:, None], 0.0)
        return out, unit

    @staticmethod
    def _matrix(op, n: int, h: int, w: int, g: torch.Generator) -> tuple[torch.Tensor, bool]:
        """(N, 3, 3) map from this op's output to its input, normalised coords; and whether it fills."""
        m = torch.eye(3).repeat(n, 1, 1)
        if isinstance(op, v2.RandomResizedCrop):
            if tuple(op.size) != (h, w):
                raise ValueError(f"RandomResizedCrop size {tuple(op.size)} differs from the images' size {(h, w)}")
            top, left, ch, cw = _crop_params(op, n, h, w, g)
            m[:, 0, 0], m[:, 0, 2] = cw / w, (2 * left + cw) / w - 1
            m[:, 1, 1], m[:, 1, 2] = ch / h, (2 * top + ch) / h - 1
            return m, False
        if isinstance(op, (v2.RandomHorizontalFlip, v2.RandomVerticalFlip)):
            axis = 0 if isinstance(op, v2.RandomHorizontalFlip) else 1
            flip = torch.rand(n, generator=g) < op.p
            m[:, axis, axis] = 1 - 2 * flip.float()
            return m, False
        angle = torch.deg2rad(_uniform(n, op.degrees[0], op.degrees[1], g))
        cos, sin = torch.cos(angle), torch.sin(angle)
        # counter-clockwise for positive angles (as torchvision), in pixel units so non-square images keep shape
        m[:, 0, 0], m[:, 0, 1] = cos, -sin * h / w
        m[:, 1, 0], m[:, 1, 1] = sin * w / h, cos
        return m, True


def _crop_params(op: v2.RandomResizedCrop, n: int, h: int, w: int, g: torch.Generator):
    """RandomResizedCrop.make_params for n images at once: (top, left, height, width) as float tensors."""
    area = h * w * _uniform(n, op.scale[0], op.scale[1], g, 10)
    ratio = torch.exp(_uniform(n, math.log(op.ratio[0]), math.log(op.ratio[1]), g, 10))
    cw, ch = torch.sqrt(area * ratio).round(), torch.sqrt(area / ratio).round()
    found, cw, ch = _first_valid((cw > 0) & (cw <= w) & (ch > 0) & (ch <= h), cw, ch)
    # torchvision's fallback: the central crop with the ratio clamped
    in_ratio = w / h
    fw, fh = float(w), float(h)
    if in_ratio < min(op.ratio):
        fh = float(round(w / min(op.ratio)))
    elif in_ratio > max(op.ratio):
        fw = float(round(h * max(op.ratio)))
    cw, ch = torch.where(found, cw, fw), torch.where(found, ch, fh)
    top = torch.where(found, torch.floor(torch.rand(n, generator=g) * (h - ch + 1)), ((h - ch) // 2))
    left = torch.where(found, torch.floor(torch.rand(n, generator=g) * (w - cw + 1)), ((w - cw) // 2))
    return top, left, ch, cw


def _grid(chain: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """affine_grid(chain[:, :2], align_corners=False) laid out (H, W, N, 2): one 2-D matmul, much
    faster on CPU than affine_grid's batched one."""
    ys = (torch.arange(h, dtype=torch.float32) * 2 + 1) / h - 1
    xs = (torch.arange(w, dtype=torch.float32) * 2 + 1) / w - 1
    base = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w)], -1).reshape(h * w, 3)
    n = chain.shape[0]
    return (base @ chain[:, :2].permute(2, 0, 1).reshape(3, n * 2)).view(h, w, n, 2)


class _Colour:
    """ColorJitter's brightness, contrast and saturation as one linear map per image.

    Without clipping the three commute, so v2's random order does not matter; this clips once.
    """

    def __init__(self, brightness, contrast, saturation) -> None:
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    def __call__(self, x: torch.Tensor, unit: float, g: torch.Generator):
        n = x.shape[0]
        ones = torch.ones(n, 1, 1, 1)
        b = _uniform(n, *self.brightness, g, 1, 1, 1) if self.brightness is not None else ones
        c = _uniform(n, *self.contrast, g, 1, 1, 1) if self.contrast is not None else ones
        s = _uniform(n, *self.saturation, g, 1, 1, 1) if self.saturation is not None else ones
        if self.contrast is None and self.saturation is None:
            return (x * b).clamp_(0, 255), unit
        # saturation(contrast(brightness(x))) = b*c*s*x + b*c*(1-s)*grey(x) + b*(1-c)*mean(grey(x))
        grey = (x * torch.tensor(_GREY).view(1, 3, 1, 1)).sum(1, keepdim=True)
        offset = grey.mean((2, 3), keepdim=True) * (b * (1 - c))
        offset = torch.addcmul(offset, grey, b * c * (1 - s))
        return torch.addcmul(offset, x, b * c * s).clamp_(0, 255), unit


class _ToDtype:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def __call__(self, x: torch.Tensor, unit: float, g: torch.Generator):
        return x, 255.0 if self.dtype.is_floating_point else 1.0


class _Noise:
    def __init__(self, mean: float, sigma: float, clip: bool) -> None:
        self.mean, self.sigma, self.clip = mean, sigma, clip

    def __call__(self, x: torch.Tensor, unit: float, g: torch.Generator):
        if unit == 1.0:
            raise ValueError("GaussianNoise needs float images: put ToDtype(torch.float32, scale=True) before it")
        x = x + (torch.randn(x.shape, generator=g) * self.sigma + self.mean) * unit
        return (x.clamp_(0, 255) if self.clip else x), unit


class _Erase:
    def __init__(self, p: float, scale, ratio, value) -> None:
        self.p, self.scale, self.ratio, self.value = p, scale, ratio, list(value)

    def __call__(self, x: torch.Tensor, unit: float, g: torch.Generator):
        n, _, h, w = x.shape
        apply = torch.rand(n, generator=g) < self.p
        area = h * w * _uniform(n, self.scale[0], self.scale[1], g, 10)
        ratio = torch.exp(_uniform(n, math.log(self.ratio[0]), math.log(self.ratio[1]), g, 10))
        eh, ew = torch.sqrt(area * ratio).round(), torch.sqrt(area / ratio).round()
        found, eh, ew = _first_valid((eh < h) & (ew < w), eh, ew)
        top = torch.floor(torch.rand(n, generator=g) * (h - eh + 1))
        left = torch.floor(torch.rand(n, generator=g) * (w - ew + 1))
        rows, cols = torch.arange(h), torch.arange(w)
        in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
        in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
        mask = (in_rows[:, :, None] & in_cols[:, None, :] & (apply & found)[:, None, None])[:, None]
        value = torch.tensor(self.value, dtype=x.dtype).view(1, -1, 1, 1) * unit
        return torch.where(mask, value, x), unit


class _PerImage:
    """Ops without a batched form, run image by image on a private copy of torch's random state."""

    def __init__(self, ops: list) -> None:
        self.ops = ops

    def __call__(self, x: torch.Tensor, unit: float, g: torch.Generator):
        transform = v2.Compose(self.ops)
        images = (x / 255.0) if unit != 1.0 else x.clamp(0, 255).round().to(torch.uint8)
        seed = int(torch.randint(0, 2**62, (1,), generator=g))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = torch.stack([transform(image) for image in images])
        if out.dtype == torch.uint8:
            return out.float(), 1.0
        return out * 255.0, 255.0
