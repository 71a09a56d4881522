"""Decode caps for serving: size caps before decoding, reduced-size JPEG decoding, 16-bit to 8-bit by
scaling, centre crops resized from source pixels. Memory bounds are measured in a fresh process
(peak RSS growth), never timed."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import sklearn.datasets
from onnx import TensorProto, helper
from PIL import Image

from imgclf.bundle import META_CLASS_NAMES, META_PREPROCESS, ONNX_INPUT, ONNX_OUTPUT
from imgclf.data.decode import SERVING_LIMITS, DecodeLimits, ImageRejected, open_image
from imgclf.data.digits import write_digits
from imgclf.data.validation_config import ValidationConfig
from imgclf.preprocess import _RESAMPLE, PreprocessSpec
from imgclf.serving.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
PEAK_MB = 200  # decode + resize of a 10-Mpx strip; resizing the whole strip first would need ~10 GB


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def real_photo() -> Image.Image:
    """A real photo that ships with scikit-learn (640x427 JPEG), nothing downloaded."""
    return Image.open(Path(sklearn.datasets.__file__).parent / "images" / "china.jpg").convert("RGB")


def big_photo(size: tuple[int, int] = (2560, 1708)) -> Image.Image:
    """The real photo at camera size, with sensor-like noise so the JPEG has fine detail."""
    upscaled = np.asarray(real_photo().resize(size, Image.BICUBIC), np.int16)
    noise = np.random.default_rng(0).normal(0, 6, upscaled.shape).astype(np.int16)
    return Image.fromarray(np.clip(upscaled + noise, 0, 255).astype(np.uint8))


def old_center_crop(spec: PreprocessSpec, image: Image.Image) -> np.ndarray:
    """The center_crop this change replaced: resize the whole image, then crop (the parity reference)."""
    size, resample = spec.image_size, _RESAMPLE[spec.interpolation]
    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), resample)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def peak_growth_mb(path: Path, code: str) -> float:
    """Peak RSS growth (MB) of `code` run in a fresh interpreter on the bytes of `path` (as `data`)."""
    script = (
        "import resource, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from imgclf.data.decode import SERVING_LIMITS, DecodeLimits, ImageRejected, open_image\n"
        "from imgclf.preprocess import PreprocessSpec\n"
        f"data = open({str(path)!r}, 'rb').read()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"{code}\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout.strip().splitlines()[-1])


# -- caps ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "reason"),
    [
        ((6000, 5000), "decompression_bomb"),  # 30 Mpx: over serving's 25 Mpx, under training's 40 Mpx
        ((12_001, 100), "too_large"),
        ((2100, 100), "extreme_aspect_ratio"),  # 21:1
    ],
)
def test_serving_caps_refuse_before_decoding_what_training_accepts(size, reason):
    data = encode(Image.new("L", size), "PNG")
    with pytest.raises(ImageRejected) as err:
        open_image(data, limits=SERVING_LIMITS, source="upload")
    assert err.value.reason == reason and err.value.source == "upload"
    training = ValidationConfig()  # training's caps are unchanged: these images are kept
    image, info = open_image(data, max_pixels=training.max_pixels, min_size=training.min_size)
    assert (info.width, info.height) == size and image.size == size


def test_serving_refuses_sides_below_eight_pixels():
    with pytest.raises(ImageRejected) as err:
        open_image(encode(Image.new("RGB", (7, 300)), "PNG"), limits=SERVING_LIMITS)
    assert err.value.reason == "too_small" and "minimum side of 8" in err.value.detail


def test_limits_reject_nonsense_values():
    with pytest.raises(ValueError, match="max_side"):
        DecodeLimits(max_side=4, min_side=8)
    with pytest.raises(ValueError, match="max_aspect"):
        DecodeLimits(max_aspect=0.5)
    with pytest.raises(ValueError, match="max_pixels"):
        DecodeLimits(max_pixels=0)


def test_strip_of_ten_million_by_four_is_refused_by_serving_and_never_decoded(tmp_path):
    strip = tmp_path / "strip.png"
    strip.write_bytes(encode(Image.new("L", (10_000_000, 4), 90), "PNG", compress_level=9))
    assert strip.stat().st_size < 200_000  # the attack is a tiny upload
    growth = peak_growth_mb(
        strip,
        "try:\n"
        "    open_image(data, limits=SERVING_LIMITS, draft_size=(128, 128))\n"
        "    raise SystemExit('the strip was decoded')\n"
        "except ImageRejected as exc:\n"
        "    assert exc.reason == 'decompression_bomb', exc.reason  # 40 Mpx > 25 Mpx, checked first\n",
    )
    assert growth < 20  # a header parse; decoding the strip alone is 40 MB grey, 160 MB RGB
    within = encode(Image.new("L", (12_000, 8)), "PNG")  # within the pixel and side caps: 1500:1
    with pytest.raises(ImageRejected) as err:
        open_image(within, limits=SERVING_LIMITS)
    assert err.value.reason == "extreme_aspect_ratio"


@pytest.mark.parametrize("mode", ["center_crop", "squash", "letterbox"])
@pytest.mark.parametrize("shape", [(2_500_000, 4), (4, 2_500_000)])
def test_extreme_strip_resize_has_no_huge_intermediate(tmp_path, mode, shape):
    """Training has no aspect cap: a 10-Mpx strip decodes (40 MB RGB) and resizes within PEAK_MB."""
    path = tmp_path / "strip.png"
    path.write_bytes(encode(Image.new("L", shape, 200), "PNG", compress_level=9))
    growth = peak_growth_mb(
        path,
        f"out = PreprocessSpec(image_size=64, resize_mode={mode!r}).resize(open_image(data)[0])\n"
        "assert out.shape == (64, 64, 3) and out.max() == 200\n",
    )
    assert growth < PEAK_MB


# -- 16-bit -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grey_is_scaled_not_clipped(fmt):
    values = np.array([[0, 128, 129, 257, 32768, 65407, 65535, 40000]], dtype=np.uint16)
    image, info = open_image(encode(Image.fromarray(values), fmt))
    assert info.mode == "I;16"
    expected = [0, 0, 1, 1, 128, 255, 255, 156]  # round(v / 257)
    assert np.asarray(image)[0, :, 0].tolist() == expected and np.asarray(image).shape == (1, 8, 3)


def test_32_bit_integer_grey_is_clipped_to_16_bits_then_scaled():
    values = np.array([[-5, 0, 65535, 100_000, 32768]], dtype=np.int32)
    image, info = open_image(encode(Image.fromarray(values, "I"), "TIFF"))
    assert info.mode == "I" and np.asarray(image)[0, :, 0].tolist() == [0, 0, 255, 255, 128]


def test_16_bit_decode_makes_no_float_copy(tmp_path):
    """10 Mpx of 16-bit grey: the old float64 path peaked ~4x higher (several 80 MB copies)."""
    ramp = np.broadcast_to((np.arange(4000, dtype=np.uint32) * 16).astype(np.uint16), (2500, 4000))
    path = tmp_path / "grey16.png"
    path.write_bytes(encode(Image.fromarray(np.ascontiguousarray(ramp)), "PNG"))
    growth = peak_growth_mb(path, "image, _ = open_image(data)\nassert image.getpixel((3999, 0))[0] == 249\n")
    assert growth < 120  # 20 MB 16-bit + 10 MB grey + 40 MB RGB + strips


# -- reduced-size JPEG decoding ----------------------------------------------------------------
@pytest.mark.parametrize("mode", ["squash", "center_crop", "letterbox"])
def test_draft_decodes_a_large_jpeg_smaller_but_never_below_the_need(mode):
    spec = PreprocessSpec(image_size=64, resize_mode=mode)
    data = encode(big_photo(), "JPEG", quality=90)
    full, info = open_image(data)  # training: full size, as cached
    small, small_info = open_image(data, limits=SERVING_LIMITS, draft_size=spec.draft_size())
    assert full.size == (2560, 1708) and small_info == info
    assert small.size == (640, 427)  # libjpeg's 1/4 scale, still >= draft_size (256, 256); 1/8 is not
    assert min(small.size) >= spec.draft_size()[0]
    diff = np.abs(spec.resize(small).astype(int) - spec.resize(full).astype(int))
    # measured on 12 photos: mean 0.03-0.22 per photo, max 1-11 (JPEG q90 itself: mean 0.08-0.3)
    assert diff.mean() < 0.3 and diff.max() <= 3


def test_draft_never_goes_below_the_needed_size():
    spec = PreprocessSpec(image_size=224)
    data = encode(big_photo((1920, 1800)), "JPEG", quality=90)
    image, _ = open_image(data, draft_size=spec.draft_size())
    assert image.size == (960, 900)  # 1/2; 1/4 would be 480x450, below the 896 px draft_size


def tiny_onnx(path: Path, spec: PreprocessSpec) -> Path:
    """A two-class model (mean colour -> logits) with imgclf's metadata; no torch needed."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [3, 2], [1.0, -1.0, 0.0, 0.0, 0.0, 0.0])
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", [ONNX_INPUT], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], [ONNX_OUTPUT]),
        ],
        "tiny",
        [helper.make_tensor_value_info(ONNX_INPUT, TensorProto.FLOAT, ["n", 3, spec.image_size, spec.image_size])],
        [helper.make_tensor_value_info(ONNX_OUTPUT, TensorProto.FLOAT, ["n", 2])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {META_CLASS_NAMES: json.dumps(["red", "dark"]), META_PREPROCESS: spec.to_json()})
    onnx.save(model, path)
    return path


def test_predictor_decodes_uploads_with_serving_caps_and_draft(tmp_path, monkeypatch):
    spec = PreprocessSpec(image_size=32, resize_mode="center_crop")
    predictor = Predictor(tiny_onnx(tmp_path / "tiny.onnx", spec))
    with pytest.raises(ImageRejected) as err:
        predictor.predict(encode(Image.new("RGB", (12_000, 8)), "PNG"))
    assert err.value.reason == "extreme_aspect_ratio"
    seen: list[tuple[int, int]] = []
    resize = PreprocessSpec.resize
    monkeypatch.setattr(PreprocessSpec, "resize", lambda self, image: seen.append(image.size) or resize(self, image))
    result = predictor.predict(encode(big_photo(), "JPEG", quality=90))
    assert seen == [(320, 214)] and result["label"] in ("red", "dark")  # 1/8 of 2560x1708, >= 4 x 32 px


# -- centre crop in source coordinates ----------------------------------------------------------
@pytest.fixture(scope="module")
def digit_images(tmp_path_factory) -> list[Image.Image]:
    root = tmp_path_factory.mktemp("digits")
    write_digits(root, limit_per_class=3)
    return [open_image(path)[0] for path in sorted(root.rglob("*.png"))]


def photo_crops() -> list[Image.Image]:
    """Small real-photo pieces (upscaled by the resize) and the whole photo (downscaled)."""
    photo = real_photo()
    sizes = [(40, 60), (30, 200), (50, 20), (63, 64), (9, 300), (100, 33)]
    return [photo.crop((100, 80, 100 + w, 80 + h)) for w, h in sizes] + [photo, big_photo((1001, 999))]


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("size", [64, 224])
def test_center_crop_matches_resize_then_crop(digit_images, interpolation, size):
    spec = PreprocessSpec(image_size=size, resize_mode="center_crop", interpolation=interpolation)
    for image in digit_images:  # square 8x8 digits: the same pixels
        assert np.array_equal(spec.resize(image), old_center_crop(spec, image))
    downscaled = [real_photo(), big_photo((1001, 999))]
    for image in downscaled:  # every downscale is bit-identical to the caches made before
        assert np.array_equal(spec.resize(image), old_center_crop(spec, image))
    if interpolation == "bilinear":  # upscaled pieces: resized from source pixels, within 1 level
        for image in photo_crops():
            diff = np.abs(spec.resize(image).astype(int) - old_center_crop(spec, image).astype(int))
            assert diff.max() <= 1, image.size
