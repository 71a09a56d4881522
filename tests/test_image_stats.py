"""Per-image statistics on constructed images and real digits: exact values where they are known
(black, white, grey, two levels, pure colours) and the right ordering where they are not (blurred
below sharp, noise above flat)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter
from sklearn.datasets import load_digits

from imgclf.monitoring.stats import STATISTICS, image_statistics, image_statistics_batch


def flat(value, size=(32, 32)) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=np.uint8), (*size, 3)).copy()


def digit_rgb(index: int = 0, size: int = 64) -> np.ndarray:
    """A real digits image (8x8, 0..16) as an RGB uint8 image, enlarged with hard edges."""
    image = (load_digits().images[index] * (255 / 16)).astype(np.uint8)
    big = Image.fromarray(image).resize((size, size), Image.NEAREST)
    return np.asarray(big.convert("RGB"))


def test_black_white_and_grey_have_their_exact_values():
    black, white, grey = (image_statistics(flat(v)) for v in ((0, 0, 0), (255, 255, 255), (128, 128, 128)))
    assert (black.brightness, white.brightness) == (0.0, 1.0)
    assert grey.brightness == pytest.approx(128 / 255)
    for stats in (black, white, grey):
        assert (stats.contrast, stats.saturation, stats.sharpness, stats.entropy) == (0.0, 0.0, 0.0, 0.0)
    assert (black.clipped, white.clipped, grey.clipped) == (1.0, 1.0, 0.0)


def test_two_levels_give_one_bit_and_half_contrast():
    image = flat((0, 0, 0))
    image[:, 16:] = 255
    stats = image_statistics(image)
    assert stats.entropy == pytest.approx(1.0)
    assert stats.contrast == pytest.approx(0.5)
    assert stats.brightness == pytest.approx(0.5)
    assert stats.clipped == 1.0


def test_noise_has_high_entropy_contrast_and_sharpness():
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    stats, grey = image_statistics(noise), image_statistics(flat((128, 128, 128), (64, 64)))
    assert stats.entropy > 6.5 and stats.entropy <= 8.0
    assert stats.contrast > 0.1 and stats.sharpness > 0.1
    assert 0.4 < stats.brightness < 0.6
    assert grey.entropy == 0.0 and grey.sharpness == 0.0


def test_blurring_a_digit_lowers_sharpness_not_brightness():
    sharp = digit_rgb(0)
    blurred = np.asarray(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(3)))
    s, b = image_statistics(sharp), image_statistics(blurred)
    assert b.sharpness < s.sharpness / 4
    assert b.brightness == pytest.approx(s.brightness, abs=0.02)
    assert b.contrast < s.contrast


def test_saturation_of_pure_pastel_and_grey_colours():
    red, pastel, grey = (image_statistics(flat(c)) for c in ((255, 0, 0), (255, 128, 128), (90, 90, 90)))
    assert red.saturation == pytest.approx(1.0)
    assert pastel.saturation == pytest.approx(127 / 255)
    assert grey.saturation == 0.0
    green, blue = image_statistics(flat((0, 255, 0))), image_statistics(flat((0, 0, 255)))
    assert green.brightness > red.brightness > blue.brightness  # luma weighs green most


def test_sharpness_does_not_grow_with_the_pixel_count():
    """The same texture (a tiled checkerboard) at 32x32 and 256x256 pixels has about the same sharpness."""
    tile = np.kron([[0, 255], [255, 0]], np.ones((4, 4))).astype(np.uint8)
    small, large = (np.stack([np.tile(tile, (n, n))] * 3, axis=-1) for n in (4, 32))
    assert image_statistics(large).sharpness == pytest.approx(image_statistics(small).sharpness, rel=0.15)


def test_batch_matches_one_image_at_a_time():
    images = np.stack([digit_rgb(i, 32) for i in range(5)])
    columns = image_statistics_batch(images)
    assert set(columns) == set(STATISTICS)
    for i, image in enumerate(images):
        one = image_statistics(image)
        assert all(columns[name][i] == getattr(one, name) for name in STATISTICS)


@pytest.mark.parametrize(
    ("array", "error", "words"),
    [
        (np.zeros((8, 8, 3), dtype=np.float32), TypeError, "uint8"),
        (np.zeros((8, 8), dtype=np.uint8), ValueError, "(H, W, 3)"),
        (np.zeros((8, 8, 4), dtype=np.uint8), ValueError, "(H, W, 3)"),
    ],
)
def test_wrong_arrays_are_refused_by_name(array, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        image_statistics(array)
