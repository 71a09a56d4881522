"""Validation end to end on small generated images: each odd-but-valid format is kept and decodes to
the same RGB pixels from a path or from bytes; each bad file gets its reason; the GX suite passes,
fails, stops the run or warns according to the config; duplicates and label conflicts are accounted
for; the result renders to HTML, round-trips through its materializer and reaches MLflow."""

from __future__ import annotations

import io
import json
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile
from pydantic import ValidationError

from imgclf.data.decode import ImageRejected, open_image
from imgclf.data.ingest import ingest_folder
from imgclf.data.manifest import DatasetManifest, Quarantine
from imgclf.data.validate import console_report, validate
from imgclf.data.validation_config import DEFAULT_SEVERITY, ValidationConfig
from imgclf.data.validation_result import DataValidationError, Duplicate, SuiteCheck, SuiteResult

# ---------------------------------------------------------------- generated images


def noise(size=(16, 16), seed: int = 0) -> Image.Image:
    """A random RGB image: distinct seeds give distinct bytes (no accidental duplicates)."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def png_with(width: int, height: int, idat: bytes) -> bytes:
    """A PNG whose IHDR declares width x height (8-bit RGB) followed by the given IDAT payload."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def write(root: Path, rel: str, data: bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_dataset(root: Path, per_class: dict[str, int] | None = None, size=(16, 16)) -> Path:
    """Class folders of distinct noise PNGs (default a, b, c with 4 each)."""
    for label, n in (per_class or {"a": 4, "b": 4, "c": 4}).items():
        for i in range(n):
            write(root, f"{label}/{i:02d}.png", encode(noise(size, seed=zlib.crc32(f"{label}{i}".encode())), "PNG"))
    return root


def half_red_half_blue(width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height), (255, 0, 0))
    image.paste((0, 0, 255), (width // 2, 0, width, height))
    return image


def exif_rotated_jpeg() -> bytes:
    """40x20 stored (red left, blue right) with EXIF orientation 6: displayed 20x40, red on top."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(half_red_half_blue(40, 20), "JPEG", exif=exif, quality=95)


def palette_with_transparency() -> bytes:
    image = Image.new("P", (16, 16), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.paste(1, (8, 0, 16, 16))  # right half: index 1, the transparent one
    return encode(image, "PNG", transparency=1)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


# name -> (bytes, decoded size, {pixel xy: expected RGB}, tolerance for lossy formats)
ODD_IMAGES = {
    "a/cmyk.jpg": (
        lambda: encode(Image.new("CMYK", (16, 16), (0, 255, 0, 0)), "JPEG", quality=95),
        (16, 16),
        {(8, 8): (255, 0, 255)},
        8,
    ),
    "a/grey16.png": (lambda: encode(Image.new("I;16", (16, 16), 40000), "PNG"), (16, 16), {(3, 3): (156, 156, 156)}, 0),
    "a/palette_transparent.png": (palette_with_transparency, (16, 16), {(2, 2): (255, 0, 0), (12, 2): (0, 0, 0)}, 0),
    "a/grey_alpha.png": (
        lambda: encode(Image.new("LA", (16, 16), (200, 128)), "PNG"),
        (16, 16),
        {(5, 5): (100, 100, 100)},
        1,
    ),
    "a/rotated.jpg": (exif_rotated_jpeg, (20, 40), {(10, 3): (255, 0, 0), (10, 36): (0, 0, 255)}, 40),
    "a/photo.webp": (
        lambda: encode(Image.new("RGB", (16, 16), (0, 0, 255)), "WEBP", lossless=True),
        (16, 16),
        {(4, 4): (0, 0, 255)},
        0,
    ),
    "a/animated.gif": (animated_gif, (16, 16), {(8, 8): (255, 0, 0)}, 0),
    "a/bitmap.bmp": (lambda: encode(Image.new("RGB", (16, 16), (1, 2, 3)), "BMP"), (16, 16), {(0, 0): (1, 2, 3)}, 0),
    "a/scan.tiff": (lambda: encode(Image.new("RGB", (16, 16), (4, 5, 6)), "TIFF"), (16, 16), {(0, 0): (4, 5, 6)}, 0),
    "a/SHOUT.JPG": (
        lambda: encode(Image.new("RGB", (16, 16), (0, 200, 0)), "JPEG", quality=95),
        (16, 16),
        {(8, 8): (0, 200, 0)},
        8,
    ),
    "a/ünïcødé name 7.png": (
        lambda: encode(Image.new("RGB", (16, 16), (7, 8, 9)), "PNG"),
        (16, 16),
        {(0, 0): (7, 8, 9)},
        0,
    ),
    "a/actually_png.jpg": (
        lambda: encode(Image.new("RGB", (16, 16), (9, 9, 9)), "PNG"),
        (16, 16),
        {(0, 0): (9, 9, 9)},
        0,
    ),
}


def noise_png_cut_in_half() -> bytes:
    data = encode(noise((64, 64), seed=1), "PNG")
    return data[: len(data) // 2]


def noise_jpeg_cut_in_half() -> bytes:
    data = encode(noise((64, 64), seed=2), "JPEG")
    return data[: len(data) // 2]


def tiff_with_unknown_pixel_layout() -> bytes:
    """A valid RGB TIFF whose PhotometricInterpretation is patched to 4 (transparency mask) with 3
    samples per pixel: the header parses, but no pixel mode exists for that layout."""
    data = encode(Image.new("RGB", (16, 16), (1, 2, 3)), "TIFF")
    entry = b"\x06\x01\x03\x00\x01\x00\x00\x00\x02\x00"  # tag 262, SHORT, count 1, value 2 (RGB)
    at = data.index(entry)
    return data[: at + 8] + b"\x04\x00" + data[at + 10 :]


BOMB_SIDE = 100_000

# name -> (bytes, reason)
BAD_FILES = {
    "a/empty.jpg": (lambda: b"", "zero_bytes"),
    "a/notes.png": (lambda: b"these are notes, not a picture\n", "not_an_image"),
    "a/page.jpg": (lambda: b"<!doctype html><html><body>404</body></html>", "not_an_image"),
    "a/cut.png": (noise_png_cut_in_half, "truncated"),
    "a/cut.jpg": (noise_jpeg_cut_in_half, "truncated"),
    "a/garbled.png": (lambda: png_with(16, 16, b"\x00not zlib data at all" * 8), "corrupt"),
    "a/garbled.jpg": (
        lambda: encode(noise((32, 32), 3), "JPEG")[:200] + bytes(range(256)) * 8 + b"\xff\xd9",
        "corrupt",
    ),
    "a/bomb.png": (lambda: png_with(BOMB_SIDE, BOMB_SIDE, zlib.compress(b"\x00" * 64)), "decompression_bomb"),
    "a/tiny.png": (lambda: encode(Image.new("RGB", (4, 4)), "PNG"), "too_small"),
    "a/odd_layout.tiff": (tiff_with_unknown_pixel_layout, "unreadable_mode"),
}


def reasons_of(quarantine) -> dict[str, str]:
    return dict(zip(quarantine.records["path"], quarantine.records["reason"]))


def check(suite: SuiteResult, name: str) -> SuiteCheck:
    (found,) = [c for c in suite.checks if c.check == name and c.column != "height"]
    return found


def assert_accounted(manifest: DatasetManifest, kept, quarantine, suite: SuiteResult) -> None:
    """received == kept + quarantined + duplicates, and every received path is in exactly one place."""
    dropped = [d.duplicate for d in suite.duplicates]
    places = list(kept.records["path"]) + list(quarantine.records["path"]) + dropped
    assert sorted(places) == sorted(manifest.records["path"])
    assert suite.counts == {
        "received": len(manifest),
        "kept": len(kept),
        "quarantined": len(quarantine),
        "duplicates": len(dropped),
    }


# ---------------------------------------------------------------- odd but valid images


@pytest.mark.parametrize("name", list(ODD_IMAGES))
def test_odd_image_decodes_to_rgb_the_same_from_path_and_bytes(tmp_path, name):
    make, size, pixels, tol = ODD_IMAGES[name]
    path = write(tmp_path, name, make())
    image, info = open_image(path)
    assert image.mode == "RGB" and image.size == size
    for xy, expected in pixels.items():
        assert np.abs(np.subtract(image.getpixel(xy), expected)).max() <= tol, (name, xy, image.getpixel(xy))
    from_bytes, _ = open_image(path.read_bytes())  # the service decodes uploads from bytes
    assert np.array_equal(np.asarray(image), np.asarray(from_bytes))
    if name == "a/actually_png.jpg":
        assert info.format == "PNG"


def test_odd_images_are_all_kept_by_validation(tmp_path):
    root = make_dataset(tmp_path / "data")
    for name, (make, *_rest) in ODD_IMAGES.items():
        write(root, name, make())
    manifest = ingest_folder(root)
    kept, quarantine, suite = validate(manifest, ValidationConfig())
    assert len(quarantine) == 0, quarantine.records.to_dict("records")
    assert set(ODD_IMAGES) <= set(kept.records["path"])
    assert suite.success and suite.duplicates == []
    assert_accounted(manifest, kept, quarantine, suite)


# ---------------------------------------------------------------- bad files


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_file_is_rejected_with_its_reason_and_name(tmp_path, name):
    make, reason = BAD_FILES[name]
    path = write(tmp_path, name, make())
    with pytest.raises(ImageRejected) as err:
        open_image(path, min_size=8)
    assert err.value.reason == reason, err.value
    assert str(path) in str(err.value) and err.value.detail


def test_bad_files_are_quarantined_and_the_run_goes_on(tmp_path):
    root = make_dataset(tmp_path / "data")
    for name, (make, _) in BAD_FILES.items():
        write(root, name, make())
    manifest = ingest_folder(root)
    kept, quarantine, suite = validate(manifest, ValidationConfig(min_size=8))
    assert reasons_of(quarantine) == {name: reason for name, (_, reason) in BAD_FILES.items()}
    assert all(quarantine.records["detail"].str.len() > 0)
    assert len(kept) == 12 and not suite.stops_run
    assert_accounted(manifest, kept, quarantine, suite)


def test_decompression_bomb_is_never_decoded(tmp_path, monkeypatch):
    decoded_sizes = []
    real_load = ImageFile.ImageFile.load

    def spy(self):
        decoded_sizes.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    root = make_dataset(tmp_path / "data")
    write(root, "a/bomb.png", BAD_FILES["a/bomb.png"][0]())
    _, quarantine, _ = validate(ingest_folder(root), ValidationConfig())
    assert reasons_of(quarantine) == {"a/bomb.png": "decompression_bomb"}
    assert decoded_sizes.count((16, 16)) >= 12, "the spy must see the good images being decoded"
    assert (BOMB_SIDE, BOMB_SIDE) not in decoded_sizes


def test_pixel_cap_and_min_size_come_from_the_config(tmp_path):
    root = make_dataset(tmp_path / "data")
    write(root, "a/wide.png", encode(noise((120, 100), seed=9), "PNG"))
    manifest = ingest_folder(root)
    _, quarantine, _ = validate(manifest, ValidationConfig(max_pixels=10_000))
    assert reasons_of(quarantine) == {"a/wide.png": "decompression_bomb"}
    assert "12000 pixels exceeds the cap of 10000" in quarantine.records["detail"][0]
    _, quarantine, _ = validate(manifest, ValidationConfig(min_size=17), raise_on_error=False)
    assert set(reasons_of(quarantine).values()) == {"too_small"} and len(quarantine) == 12


def test_a_decoder_crash_is_a_quarantine_reason_not_a_crash(tmp_path, monkeypatch):
    import imgclf.data.file_checks as module

    real = module.open_image

    def flaky(data, **kwargs):
        if data == (tmp_path / "data" / "b" / "01.png").read_bytes():
            raise MemoryError("decoder blew up")
        return real(data, **kwargs)

    monkeypatch.setattr(module, "open_image", flaky)
    root = make_dataset(tmp_path / "data")
    _, quarantine, _ = validate(ingest_folder(root), ValidationConfig())
    assert quarantine.records.to_dict("records") == [
        {"path": "b/01.png", "reason": "corrupt", "detail": "unexpected decoder error (MemoryError: decoder blew up)"}
    ]


def test_a_file_changed_after_ingest_is_quarantined(tmp_path):
    root = make_dataset(tmp_path / "data")
    manifest = ingest_folder(root)
    write(root, "c/00.png", encode(noise(seed=99), "PNG"))
    _, quarantine, _ = validate(manifest, ValidationConfig())
    assert reasons_of(quarantine) == {"c/00.png": "changed_since_ingest"}


# ---------------------------------------------------------------- the GX suite and severities


def test_clean_dataset_passes_every_check(tmp_path):
    manifest = ingest_folder(make_dataset(tmp_path / "data"))
    kept, _, suite = validate(manifest, ValidationConfig())
    assert suite.success and suite.verdict() == "PASSED" and len(kept) == 12
    assert {c.check for c in suite.checks} == set(DEFAULT_SEVERITY)
    assert all(c.severity == DEFAULT_SEVERITY[c.check] for c in suite.checks)
    assert check(suite, "class_imbalance").observed == 1.0
    assert check(suite, "min_classes").observed == 3


def test_error_check_stops_the_run_naming_check_and_class(tmp_path):
    manifest = ingest_folder(make_dataset(tmp_path / "data", {"a": 4, "b": 4, "c": 2}))
    with pytest.raises(DataValidationError) as err:
        validate(manifest, ValidationConfig())
    message = str(err.value)
    assert "ERROR min_images_per_class" in message and "expect_column_values_to_be_between(images)" in message
    assert message.rstrip().endswith("; c") and "received 10 = kept 10 + quarantined 0 + duplicates 0" in message


def test_same_check_as_warning_lets_the_run_go_on(tmp_path):
    manifest = ingest_folder(make_dataset(tmp_path / "data", {"a": 4, "b": 4, "c": 2}))
    kept, _, suite = validate(manifest, ValidationConfig(severity={"min_images_per_class": "warning"}))
    assert len(kept) == 10 and not suite.stops_run and not suite.success
    (failure,) = suite.failures("warning")
    assert failure.check == "min_images_per_class" and failure.unexpected == ["c"]
    assert suite.verdict() == "PASSED with 1 warning(s)"


def test_fail_on_suite_error_false_reports_errors_without_stopping(tmp_path):
    manifest = ingest_folder(make_dataset(tmp_path / "data", {"a": 4, "b": 4, "c": 2}))
    _, _, suite = validate(manifest, ValidationConfig(fail_on_suite_error=False))
    assert [c.check for c in suite.failures("error")] == ["min_images_per_class"] and not suite.stops_run


def test_class_imbalance_warns_by_default_and_can_be_an_error(tmp_path):
    manifest = ingest_folder(make_dataset(tmp_path / "data", {"a": 12, "b": 3}))
    _, _, suite = validate(manifest, ValidationConfig(max_imbalance_ratio=3))
    failure = check(suite, "class_imbalance")
    assert not failure.success and failure.observed == 4.0 and failure.severity == "warning"
    assert not suite.stops_run
    _, _, relaxed = validate(manifest, ValidationConfig(max_imbalance_ratio=4))
    assert check(relaxed, "class_imbalance").success
    with pytest.raises(
        DataValidationError, match=r"ERROR class_imbalance .* observed 4.0, expected largest/smallest <= 3"
    ):
        validate(manifest, ValidationConfig(max_imbalance_ratio=3, severity={"class_imbalance": "error"}))


def test_label_outside_the_class_set_stops_the_run_or_is_quarantined(tmp_path):
    manifest = ingest_folder(make_dataset(tmp_path / "data"))
    with pytest.raises(DataValidationError, match=r"ERROR labels_in_classes .*c/00.png, c/01.png, c/02.png, c/03.png"):
        validate(manifest, ValidationConfig(classes=["a", "b"]))
    kept, quarantine, _ = validate(
        manifest, ValidationConfig(classes=["a", "b"], severity={"labels_in_classes": "warning"})
    )
    assert set(reasons_of(quarantine).values()) == {"unknown_class"} and len(quarantine) == 4
    assert kept.class_names == ["a", "b"]


def test_multi_label_rows_count_towards_each_of_their_classes(tmp_path):
    manifest = ingest_folder(make_dataset(tmp_path / "data", {"a": 3, "b": 3}))
    records = manifest.records.copy()
    records.loc[records["path"] == "a/00.png", "label"] = "a|b"  # see DatasetManifest.label_sets
    records.loc[records["path"] == "b/00.png", "label"] = "a|z"
    manifest = DatasetManifest(manifest.root, records)
    with pytest.raises(DataValidationError, match=r"ERROR labels_in_classes .*; b/00.png$"):
        validate(manifest, ValidationConfig(classes=["a", "b"]))
    kept, quarantine, suite = validate(
        manifest, ValidationConfig(classes=["a", "b"], severity={"labels_in_classes": "warning"})
    )
    assert reasons_of(quarantine) == {"b/00.png": "unknown_class"} and "[z]" in quarantine.records["detail"][0]
    assert check(suite, "min_images_per_class").success  # a: a/00, a/01, a/02; b: a/00, b/01, b/02
    assert check(suite, "min_classes").observed == 2 and len(kept) == 5


def test_a_declared_class_without_images_fails_min_images(tmp_path):
    manifest = ingest_folder(make_dataset(tmp_path / "data"))
    with pytest.raises(DataValidationError, match=r"ERROR min_images_per_class .*; d$"):
        validate(manifest, ValidationConfig(classes=["a", "b", "c", "d"]))


def test_null_labels_warn_by_default_and_can_be_an_error(tmp_path):
    root = make_dataset(tmp_path / "data")
    write(root, "stray.png", encode(noise(seed=5), "PNG"))
    manifest = ingest_folder(root)
    kept, quarantine, suite = validate(manifest, ValidationConfig())
    assert reasons_of(quarantine) == {"stray.png": "no_label"} and len(kept) == 12
    assert check(suite, "labels_not_null").unexpected == ["stray.png"]
    with pytest.raises(DataValidationError, match=r"ERROR labels_not_null .*; stray.png"):
        validate(manifest, ValidationConfig(severity={"labels_not_null": "error"}))


def test_image_size_range_names_the_oversized_file(tmp_path):
    root = make_dataset(tmp_path / "data")
    write(root, "b/large.png", encode(noise((40, 20), seed=6), "PNG"))
    manifest = ingest_folder(root)
    with pytest.raises(DataValidationError, match=r"ERROR image_size_range .*\(width\).*; b/large.png"):
        validate(manifest, ValidationConfig(max_size=32))
    kept, quarantine, _ = validate(manifest, ValidationConfig(max_size=32, severity={"image_size_range": "warning"}))
    assert reasons_of(quarantine) == {"b/large.png": "too_large"} and len(kept) == 12


def test_a_single_class_fails_min_classes(tmp_path):
    manifest = ingest_folder(make_dataset(tmp_path / "data", {"a": 5}))
    with pytest.raises(DataValidationError, match=r"ERROR min_classes .* observed 1, expected >= 2 classes"):
        validate(manifest, ValidationConfig())


def test_nothing_usable_stops_the_run_with_the_quarantine_reasons(tmp_path):
    root = tmp_path / "data"
    write(root, "a/x.png", b"")
    write(root, "b/y.png", b"text")
    manifest = ingest_folder(root)
    with pytest.raises(DataValidationError, match=r"kept 0 \+ quarantined 2") as err:
        validate(manifest, ValidationConfig())
    assert "'zero_bytes': 1" in str(err.value) and "'not_an_image': 1" in str(err.value)


# ---------------------------------------------------------------- duplicates and label conflicts


def test_exact_duplicates_are_kept_once_and_listed(tmp_path):
    root = make_dataset(tmp_path / "data")
    original = (root / "a" / "01.png").read_bytes()
    write(root, "a/zz_copy.png", original)
    write(root, "a/nested/copy.png", original)
    write(root, "b/03_copy.png", (root / "b" / "03.png").read_bytes())
    manifest = ingest_folder(root)
    kept, quarantine, suite = validate(manifest, ValidationConfig())
    assert sorted((d.kept, d.duplicate) for d in suite.duplicates) == [
        ("a/01.png", "a/nested/copy.png"),
        ("a/01.png", "a/zz_copy.png"),
        ("b/03.png", "b/03_copy.png"),
    ]
    assert len(quarantine) == 0 and len(kept) == 12 and kept.records["sha256"].is_unique
    assert suite.counts == {"received": 15, "kept": 12, "quarantined": 0, "duplicates": 3}
    dup_check = check(suite, "exact_duplicates")
    assert not dup_check.success and dup_check.severity == "warning" and dup_check.unexpected_count == 5
    assert not suite.stops_run
    assert_accounted(manifest, kept, quarantine, suite)

    # the copy that is kept does not depend on the order of the manifest's rows
    shuffled = DatasetManifest(manifest.root, manifest.records.sample(frac=1, random_state=3))
    _, _, again = validate(shuffled, ValidationConfig())
    assert sorted(again.duplicates) == sorted(suite.duplicates)

    with pytest.raises(DataValidationError, match="ERROR exact_duplicates"):
        validate(manifest, ValidationConfig(severity={"exact_duplicates": "error"}))


def test_label_conflicts_stop_the_run_naming_the_files(tmp_path):
    root = make_dataset(tmp_path / "data")
    shared = (root / "a" / "00.png").read_bytes()
    write(root, "b/same_as_a00.png", shared)
    manifest = ingest_folder(root)
    with pytest.raises(DataValidationError) as err:
        validate(manifest, ValidationConfig())
    assert "ERROR label_conflicts" in str(err.value) and "a/00.png, b/same_as_a00.png" in str(err.value)


def test_label_conflicts_as_warning_quarantine_every_copy(tmp_path):
    root = make_dataset(tmp_path / "data")
    shared = (root / "a" / "00.png").read_bytes()
    write(root, "a/again.png", shared)  # a same-label copy inside the conflict is no plain duplicate
    write(root, "b/same_as_a00.png", shared)
    write(root, "stray.png", shared)  # unlabelled: no_label, not part of the conflict
    manifest = ingest_folder(root)
    kept, quarantine, suite = validate(manifest, ValidationConfig(severity={"label_conflicts": "warning"}))
    assert reasons_of(quarantine) == {
        "a/00.png": "label_conflict",
        "a/again.png": "label_conflict",
        "b/same_as_a00.png": "label_conflict",
        "stray.png": "no_label",
    }
    detail = dict(zip(quarantine.records["path"], quarantine.records["detail"]))["a/00.png"]
    assert "b/same_as_a00.png (b)" in detail and "a/again.png (a)" in detail
    assert check(suite, "label_conflicts").unexpected == ["a/00.png", "a/again.png", "b/same_as_a00.png"]
    assert suite.duplicates == [] and len(kept) == 11 and not suite.stops_run
    assert_accounted(manifest, kept, quarantine, suite)


# ---------------------------------------------------------------- config, rendering, materializer, step


def test_config_rejects_unknown_keys_and_checks_and_merges_severity_defaults():
    with pytest.raises(ValidationError, match="min_sise"):
        ValidationConfig(min_sise=3)
    with pytest.raises(ValidationError, match="label_conflict"):
        ValidationConfig(severity={"label_conflict": "warning"})
    with pytest.raises(ValidationError, match="error"):
        ValidationConfig(severity={"label_conflicts": "fatal"})
    with pytest.raises(ValidationError, match="max_size"):
        ValidationConfig(min_size=64, max_size=32)
    config = ValidationConfig(severity={"class_imbalance": "error"})
    assert config.severity == {**DEFAULT_SEVERITY, "class_imbalance": "error"}


@pytest.fixture()
def failing_suite(tmp_path) -> tuple[DatasetManifest, SuiteResult]:
    """A data set with a duplicate, an oddly named label conflict (warning) and a thin class (error)."""
    root = make_dataset(tmp_path / "data", {"a": 4, "b": 4, "c": 2})
    write(root, "a/copy.png", (root / "a" / "00.png").read_bytes())
    write(root, "b/<odd & name>.png", (root / "a" / "01.png").read_bytes())
    manifest = ingest_folder(root)
    _, _, suite = validate(manifest, ValidationConfig(severity={"label_conflicts": "warning"}), raise_on_error=False)
    return manifest, suite


def test_suite_html_shows_each_expectation(failing_suite):
    _, suite = failing_suite
    page = suite.to_html()
    assert "FAILED (run stopped): 1 error(s), 2 warning(s)" in page
    assert "received 12 = kept 9 + quarantined 2 + duplicates 1" in page
    for c in suite.checks:
        assert f"<td>{c.check}</td>" in page and c.expectation in page
    assert '<tr class="error"><td>min_images_per_class</td><td>FAIL (error)</td><td>error</td>' in page
    assert '<tr class="warning"><td>label_conflicts</td><td>FAIL (warning)</td><td>warning</td>' in page
    assert "<td>&gt;= 3 images</td>" in page  # the threshold, escaped
    assert "b/&lt;odd &amp; name&gt;.png" in page and "<odd & name>" not in page
    assert "<td>a/01.png, b/&lt;odd &amp; name&gt;.png</td>" in page  # the files a failed check names
    assert "<td>c</td>" in page  # ... and the classes
    assert "quarantine reasons: label_conflict: 2" in page
    assert "<td>a/00.png</td><td>a/copy.png</td>" in page  # the duplicates table


def _synthetic_suite(unexpected_count: int, duplicates: int) -> SuiteResult:
    failed = SuiteCheck(
        suite="images",
        check="labels_not_null",
        severity="warning",
        expectation="expect_column_values_to_not_be_null",
        column="label",
        success=False,
        observed=f"{unexpected_count} of 99 rows unexpected",
        threshold="every file has a label",
        unexpected_count=unexpected_count,
        unexpected=[f"f{i:02d}.png" for i in range(min(unexpected_count, 20))],
    )
    copies = [
        Duplicate(kept="a.png", duplicate=f"copy{i:03d}.png", sha256="0" * 64, label="a") for i in range(duplicates)
    ]
    return SuiteResult(success=False, checks=[failed], counts={"received": 99}, duplicates=copies)


def test_suite_html_says_how_many_files_and_duplicates_it_leaves_out():
    page = _synthetic_suite(unexpected_count=25, duplicates=502).to_html()
    assert "f19.png … (25 in all)</td>" in page and "f20.png" not in page
    assert "Exact duplicates (502): kept once, copies dropped" in page
    assert "<td>copy499.png</td>" in page and "copy500.png" not in page and "… and 2 more" in page
    page = _synthetic_suite(unexpected_count=3, duplicates=0).to_html()
    assert "f02.png</td>" in page and "in all" not in page and "Exact duplicates: none" in page
    assert "PASSED with 1 warning(s)" in page and "quarantine reasons: none" in page


def test_suite_json_keeps_its_keys(failing_suite):
    _, suite = failing_suite
    stored = json.loads(json.dumps(suite.to_dict()))
    assert set(stored) == {"success", "checks", "counts", "quarantine_reasons", "duplicates", "fail_on_error"}
    assert set(stored["checks"][0]) == {
        "suite",
        "check",
        "severity",
        "expectation",
        "column",
        "success",
        "observed",
        "threshold",
        "unexpected_count",
        "unexpected",
    }
    assert stored["duplicates"] == [
        {"kept": "a/00.png", "duplicate": "a/copy.png", "sha256": suite.duplicates[0].sha256, "label": "a"}
    ]
    assert SuiteResult.from_dict(stored) == suite


def test_console_report_names_failed_checks_and_at_most_20_quarantined_files(failing_suite):
    _, suite = failing_suite
    quarantine = Quarantine(
        pd.DataFrame({"path": [f"x/{i:02d}.png" for i in range(25)], "reason": "zero_bytes", "detail": "empty"})
    )
    lines = console_report(suite, quarantine)
    levels = [level for level, _ in lines]
    text = [line for _, line in lines]
    verdict = "data validation FAILED (run stopped): 1 error(s), 2 warning(s)"
    assert text[0] == f"{verdict}; received 12 = kept 9 + quarantined 2 + duplicates 1"
    assert text[1].startswith("ERROR min_images_per_class") and levels[1] == logging.ERROR
    assert [t.split()[0] for t in text[2:4]] == ["WARNING", "WARNING"] and levels[2:4] == [logging.WARNING] * 2
    assert not any(t.startswith("PASS") for t in text)
    assert text[4] == "quarantined 25 file(s): {'zero_bytes': 25}"
    assert text[5:25] == [f"  x/{i:02d}.png: zero_bytes (empty)" for i in range(20)]
    assert text[25:] == ["  ... and 5 more (quarantine artifact)"]
    few = console_report(suite, Quarantine(quarantine.records.head(3)))
    assert [t for _, t in few][-1] == "  x/02.png: zero_bytes (empty)"


def test_suite_materializer_round_trips_and_renders_html(failing_suite, tmp_path):
    from zenml.enums import VisualizationType

    from materializers.validation import SuiteResultMaterializer

    _, suite = failing_suite
    store = tmp_path / "artifact"
    store.mkdir()
    materializer = SuiteResultMaterializer(uri=str(store))
    materializer.save(suite)
    assert materializer.load(SuiteResult) == suite
    visualizations = materializer.save_visualizations(suite)
    assert list(visualizations.values()) == [VisualizationType.HTML]
    assert Path(next(iter(visualizations))).read_text() == suite.to_html()
    assert materializer.extract_metadata(suite) == {
        "received": 12,
        "kept": 9,
        "quarantined": 2,
        "duplicates": 1,
        "suite_success": False,
        "failed_errors": 1,
        "failed_warnings": 2,
    }


def test_step_logs_the_result_to_mlflow_before_stopping_the_run(failing_suite, mlflow_uri, monkeypatch):
    import importlib

    import mlflow

    step_module = importlib.import_module("steps.validate")  # the module: `steps.validate` is the step object

    manifest, _ = failing_suite
    logged = {}
    monkeypatch.setattr(step_module, "log_metadata", lambda metadata: logged.update(metadata))
    with mlflow.start_run() as run, pytest.raises(DataValidationError, match="ERROR min_images_per_class"):
        step_module.validate.entrypoint(manifest, ValidationConfig(severity={"label_conflicts": "warning"}))
    counts = {"received": 12, "kept": 9, "quarantined": 2, "duplicates": 1}
    assert {k: logged[k] for k in counts} == counts
    assert logged["failed_errors"] == ["min_images_per_class"]
    client = mlflow.MlflowClient()
    names = {a.path for a in client.list_artifacts(run.info.run_id, "data_validation")}
    assert names == {"data_validation/suite.json", "data_validation/suite.html", "data_validation/quarantine.json"}
    stored = json.loads(Path(client.download_artifacts(run.info.run_id, "data_validation/suite.json")).read_text())
    assert SuiteResult.from_dict(stored).counts == counts
    assert client.get_run(run.info.run_id).data.metrics["data_duplicates"] == 1
