"""The one PreprocessSpec: resize modes, normalisation identical in numpy and torch, odd image modes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from imgclf.data.decode import open_image
from imgclf.preprocess import PreprocessSpec


@pytest.mark.parametrize("mode", ["squash", "center_crop", "letterbox"])
def test_resize_gives_square_uint8(mode):
    spec = PreprocessSpec(image_size=24, resize_mode=mode)
    out = spec.resize(Image.new("RGB", (50, 20), (200, 10, 10)))
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8
    if mode == "letterbox":
        assert out[0, 0].tolist() == [0, 0, 0] and out[12, 12].tolist() == [200, 10, 10]


def test_normalize_numpy_and_torch_agree():
    spec = PreprocessSpec(image_size=8, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    batch = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    a = spec.normalize(batch)
    b = spec.normalize(torch.from_numpy(batch).permute(0, 3, 1, 2)).numpy()
    assert a.shape == (2, 3, 8, 8)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a[0, 0, 0, 0], (batch[0, 0, 0, 0] / 255 - 0.485) / 0.229, rtol=1e-5)


def test_spec_round_trips_through_json():
    spec = PreprocessSpec(image_size=32, resize_mode="letterbox", mean=(0.1, 0.2, 0.3))
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec


def test_bad_spec_is_rejected():
    with pytest.raises(ValueError, match="resize_mode"):
        PreprocessSpec(resize_mode="stretch")


@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.new("CMYK", (9, 9), (0, 255, 0, 0)),
        lambda: Image.new("I;16", (9, 9), 40000),
        lambda: Image.new("LA", (9, 9), (200, 255)),
        lambda: Image.new("P", (9, 9), 3),
    ],
)
def test_odd_modes_decode_to_rgb(make):
    buf = io.BytesIO()
    make().save(buf, format="TIFF" if make().mode in ("CMYK", "I;16") else "PNG")
    image, info = open_image(buf.getvalue())
    assert image.mode == "RGB" and image.size == (9, 9) and info.width == 9
