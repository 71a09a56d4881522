"""The benchmark data sets (bench/datasets.py): each writes what it claims, the same bytes every time,
only once, and in a form the product's sources read. Small counts; no training."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from conftest import ROOT
from imgclf.data.prepare import prepare_data
from imgclf.data.split import SplitConfig

sys.path.insert(0, str(ROOT / "bench"))
import datasets  # bench/datasets.py (bench/ is not a package)

SPLIT = SplitConfig(near_duplicate_threshold=None)  # no pHash decoding: the split is not under test here


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_glyphs_are_36_classes_of_distorted_grey_images_the_same_every_time(tmp_path: Path) -> None:
    folder = datasets.write_glyphs(tmp_path / "a", per_class=3, size=32, seed=1)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert classes == sorted(datasets.GLYPH_CLASSES)
    assert all(len(list((folder / c).glob("*.png"))) == 3 for c in classes)
    with Image.open(folder / "A" / "0000.png") as image:
        assert (image.mode, image.size) == ("L", (32, 32))
    images = [Image.open(p) for p in sorted((folder / "A").glob("*.png"))]
    assert len({image.tobytes() for image in images}) == 3  # each image drawn differently

    again = datasets.write_glyphs(tmp_path / "b", per_class=3, size=32, seed=1)
    assert _digests(folder) == _digests(again)
    other_seed = datasets.write_glyphs(tmp_path / "b", per_class=3, size=32, seed=2)
    assert other_seed != again and _digests(other_seed) != _digests(again)

    prepared = prepare_data(folder, SPLIT)
    assert len(prepared.manifest) == 36 * 3 and not len(prepared.skipped)
    assert prepared.manifest.class_names == sorted(datasets.GLYPH_CLASSES)


def test_shapes_are_multi_label_colour_scenes_in_a_csv_manifest(tmp_path: Path) -> None:
    manifest = datasets.write_shapes(tmp_path, count=40, size=48, seed=3)
    assert manifest.name == "labels.csv"
    table = pd.read_csv(manifest, dtype=str)
    assert list(table.columns) == ["file", "label"] and len(table) == 40
    labels = [set(label.split("|")) for label in table["label"]]
    assert all(labels) and set().union(*labels) <= set(datasets.SHAPE_KINDS)
    assert any(len(label) > 1 for label in labels) and any(len(label) == 1 for label in labels)
    with Image.open(manifest.parent / table["file"][0]) as image:
        assert (image.mode, image.size) == ("RGB", (48, 48))

    prepared = prepare_data(manifest, SPLIT)
    assert prepared.manifest.multi_label and len(prepared.manifest) == 40 and not len(prepared.skipped)
    assert set(prepared.manifest.class_names) <= set(datasets.SHAPE_KINDS)

    again = datasets.write_shapes(tmp_path / "again", count=40, size=48, seed=3)
    assert _digests(manifest.parent) == _digests(again.parent)


def test_a_finished_set_is_not_written_again_and_an_unfinished_one_is(tmp_path: Path) -> None:
    folder = datasets.write_glyphs(tmp_path, per_class=1, size=16)
    first = folder / "A" / "0000.png"
    first.write_bytes(b"left alone")
    assert datasets.write_glyphs(tmp_path, per_class=1, size=16) == folder
    assert first.read_bytes() == b"left alone"  # complete: skipped

    (folder / datasets.MARKER).unlink()  # as if interrupted
    datasets.write_glyphs(tmp_path, per_class=1, size=16)
    assert first.read_bytes().startswith(b"\x89PNG")
    assert datasets.write_glyphs(tmp_path, per_class=2, size=16) != folder  # other parameters: another folder


def test_digits_are_the_real_scans_in_a_folder_per_class(tmp_path: Path) -> None:
    folder = datasets.write_digits(tmp_path, limit_per_class=4)
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [str(d) for d in range(10)]
    assert sum(1 for _ in folder.rglob("*.png")) == 40
    with Image.open(next(folder.rglob("*.png"))) as image:
        assert (image.mode, image.size) == ("L", (8, 8))
    assert (folder / datasets.MARKER).is_file()
    prepared = prepare_data(folder, SPLIT)
    assert len(prepared.manifest) == 40 and not len(prepared.skipped)


def test_two_processes_draw_the_same_bytes_as_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = datasets.write_shapes(tmp_path / "one", count=6, size=24)
    monkeypatch.setattr(datasets, "PARALLEL_ABOVE", 3)
    two = datasets.write_shapes(tmp_path / "two", count=6, size=24)
    assert _digests(one.parent) == _digests(two.parent)
