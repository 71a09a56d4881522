"""Ingest, validation (per-file quarantine and the GX suite) and the split, on real digit images."""

from __future__ import annotations

import functools
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclf.data.cache import decoded_images
from imgclf.data.decode import ImageRejected, open_image
from imgclf.data.file_checks import check_images
from imgclf.data.ingest import DataSourceError, ingest_folder
from imgclf.data.split import SplitConfig, stratified_split
from imgclf.data.validate import validate
from imgclf.data.validation_config import ValidationConfig
from imgclf.data.validation_result import DataValidationError
from imgclf.logs import Progress, progress
from imgclf.preprocess import PreprocessSpec


@pytest.fixture()
def dirty_digits(digits_dir, tmp_path):
    """The digits plus one file for each kind of defect."""
    root = tmp_path / "dirty"
    shutil.copytree(digits_dir, root)
    (root / "3" / "empty.png").write_bytes(b"")
    (root / "3" / "notes.png").write_text("this is text, not a PNG")
    good = (root / "4" / sorted(p.name for p in (root / "4").iterdir())[0]).read_bytes()
    big = Image.new("L", (64, 64), 128)
    big.save(root / "5" / "big.png")
    (root / "5" / "truncated.png").write_bytes((root / "5" / "big.png").read_bytes()[:60])
    Image.new("L", (4, 4)).save(root / "6" / "tiny.png")
    (root / "loose.png").write_bytes(good)  # not in a class folder
    outside = tmp_path / "secret.png"
    outside.write_bytes(good)
    (root / "7" / "link.png").symlink_to(outside)
    return root


def test_ingest_records_every_file(dirty_digits):
    manifest = ingest_folder(dirty_digits)
    assert len(manifest) == 300 + 7
    row = manifest.records.set_index("path").loc["0/0000.png"]
    assert len(row["sha256"]) == 64 and row["width"] == 8 and row["height"] == 8
    link = manifest.records.set_index("path").loc["7/link.png"]
    assert link["sha256"] == "" and link["bytes"] == -1, "a link outside the root must not be read"


def test_ingest_rejects_missing_source(tmp_path):
    with pytest.raises(DataSourceError, match="does not exist"):
        ingest_folder(tmp_path / "nope")


def test_validate_quarantines_each_bad_file_with_its_reason(dirty_digits):
    manifest = ingest_folder(dirty_digits)
    kept, quarantine, suite = validate(manifest, ValidationConfig(min_size=8))
    reasons = dict(zip(quarantine.records["path"], quarantine.records["reason"]))
    assert reasons == {
        "3/empty.png": "zero_bytes",
        "3/notes.png": "not_an_image",
        "5/truncated.png": "truncated",
        "6/tiny.png": "too_small",
        "loose.png": "no_label",
        "7/link.png": "outside_root",
    }
    assert len(kept) + len(quarantine) == len(manifest)
    assert len(kept) == 301  # the 300 digits and big.png
    assert not suite.stops_run and [c.check for c in suite.failures()] == ["labels_not_null"]  # loose.png


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (2000, 2000)).save(path)
    with pytest.raises(ImageRejected) as err:
        open_image(path, max_pixels=1_000_000)
    assert err.value.reason == "decompression_bomb"


def test_gx_suite_fails_and_names_the_check(digits_dir, tmp_path):
    root = tmp_path / "few"
    shutil.copytree(digits_dir, root)
    for extra in sorted((root / "9").iterdir())[2:]:
        extra.unlink()  # class 9 keeps 2 images
    manifest = ingest_folder(root)
    with pytest.raises(DataValidationError, match="expect_column_values_to_be_between"):
        validate(manifest, ValidationConfig(min_images_per_class=5))
    _, _, suite = validate(manifest, ValidationConfig(min_images_per_class=5, fail_on_suite_error=False))
    failed = suite.failures("error")
    assert len(failed) == 1 and failed[0].suite == "class_counts"


def test_gx_suite_rejects_unexpected_class(digits_dir):
    manifest = ingest_folder(digits_dir)
    with pytest.raises(DataValidationError, match="expect_column_values_to_be_in_set"):
        validate(manifest, ValidationConfig(classes=[str(d) for d in range(9)]))


def test_split_is_stratified_and_deterministic(digits_dir):
    manifest = ingest_folder(digits_dir)
    a = stratified_split(manifest, SplitConfig(seed=7))
    b = stratified_split(ingest_folder(digits_dir), SplitConfig(seed=7))
    c = stratified_split(manifest, SplitConfig(seed=8))
    assert a.records["split"].tolist() == b.records["split"].tolist()
    assert a.records["split"].tolist() != c.records["split"].tolist()
    counts = a.class_counts()
    assert (counts["train"] == 22).all() and (counts["val"] == 4).all() and (counts["test"] == 4).all()
    assert not set(a.subset("train").records["sha256"]) & set(a.subset("test").records["sha256"])


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        SplitConfig(train=0.8, val=0.15, test=0.15)


def test_decoded_cache_is_reused_and_matches_preprocess(digits_dir, tmp_path):
    manifest = ingest_folder(digits_dir)
    spec = PreprocessSpec(image_size=16)
    first = decoded_images(manifest, spec, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npy"))
    second = decoded_images(manifest, spec, cache_dir=tmp_path)
    assert len(files) == 1 and list(tmp_path.glob("*.npy")) == files
    assert first.shape == (300, 16, 16, 3) and np.array_equal(first, second)
    image, _ = open_image(manifest.absolute_paths()[5])
    assert np.array_equal(first[5], spec.resize(image))


def test_split_keeps_a_tiny_class_in_train(digits_dir, tmp_path):
    root = tmp_path / "tiny"
    shutil.copytree(digits_dir, root)
    for extra in sorted((root / "0").iterdir())[1:]:
        extra.unlink()
    result = stratified_split(ingest_folder(root), SplitConfig())
    assert result.records.loc[result.records["label"] == "0", "split"].tolist() == ["train"]


def test_file_checks_and_cache_build_log_progress_only_when_slow(digits_dir, tmp_path, monkeypatch, caplog):
    import imgclf.data.cache as cache_module
    import imgclf.data.file_checks as checks_module

    manifest, spec = ingest_folder(digits_dir), PreprocessSpec(image_size=8)
    caplog.set_level(logging.INFO)

    def progress_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name in (cache_module.__name__, checks_module.__name__)]

    check_images(manifest, ValidationConfig())
    decoded_images(manifest, spec, cache_dir=tmp_path / "quick", workers=1)
    assert progress_lines() == []  # quick work says nothing
    monkeypatch.setattr(checks_module, "progress", functools.partial(progress, every_s=0))  # as if each chunk were slow
    monkeypatch.setattr(cache_module, "Progress", functools.partial(Progress, every_s=0))
    check_images(manifest, ValidationConfig())
    decoded_images(manifest, spec, cache_dir=tmp_path / "slow", workers=1)
    lines = progress_lines()
    assert lines[0].startswith("checking files: 300 files in ")
    assert lines[1].startswith("decoding the image cache: 256/300 images (85%)")
    assert lines[2].startswith("decoding the image cache: 300 images in ") and len(lines) == 3


def test_manifest_summary_page_shows_images_per_class_and_split(digits_dir, tmp_path):
    from materializers.dataset import DatasetManifestMaterializer

    manifest = ingest_folder(digits_dir)
    pages = []
    for name, data in (("raw", manifest), ("split", stratified_split(manifest, SplitConfig(seed=7)))):
        (tmp_path / name).mkdir()
        (path,) = DatasetManifestMaterializer(uri=str(tmp_path / name)).save_visualizations(data)
        pages.append(Path(path).read_text())
    raw, split = pages
    for page in pages:
        assert "<h3>300 images, 10 classes</h3>" in page and f"root: {digits_dir}" in page
    assert "<th>images</th>" in raw and "<tr><th>7</th><td>30</td></tr>" in raw and "split:" not in raw
    assert "split: train 220 (73.3%), val 40 (13.3%), test 40 (13.3%)" in split
    assert "<th>train</th><th>val</th><th>test</th><th>total</th>" in split
    assert "<tr><th>7</th><td>22</td><td>4</td><td>4</td><td>30</td></tr>" in split
    assert "<tr><th>all classes</th><td>220</td><td>40</td><td>40</td><td>300</td></tr>" in split
    assert "images in clusters kept within one split" in split and "clusters across splits 0" in split
