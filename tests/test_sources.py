"""Every source kind (folder, split folder, CSV, JSON, archive, URL) and hostile inputs refused unread."""

from __future__ import annotations

import builtins
import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from imgclf.data.archive import ArchiveError, ArchiveLimits, extract
from imgclf.data.file_checks import check_images
from imgclf.data.ingest import DataSourceError
from imgclf.data.sources import load_source
from imgclf.data.validation_config import ValidationConfig


@pytest.fixture()
def flat_images(digits_dir, tmp_path):
    """12 digit PNGs in one folder (no class folders), to be labelled by a manifest file."""
    root = tmp_path / "flat"
    root.mkdir()
    for digit in "012":
        for i, src in enumerate(sorted((digits_dir / digit).iterdir())[:4]):
            shutil.copy(src, root / f"d{digit}_{i}.png")
    return root


def test_folder_per_class(digits_dir):
    manifest = load_source(digits_dir)
    assert len(manifest) == 300 and manifest.class_names == [str(d) for d in range(10)]


def test_split_folder_is_honoured(digits_dir, tmp_path):
    root = tmp_path / "presplit"
    for split, digits in (("train", "0123"), ("val", "0123"), ("test", "0123")):
        for digit in digits:
            (root / split / digit).mkdir(parents=True)
            for src in sorted((digits_dir / digit).iterdir())[:3]:
                shutil.copy(src, root / split / digit / src.name)
    manifest = load_source(root)
    assert manifest.records["split"].value_counts().to_dict() == {"train": 12, "val": 12, "test": 12}
    assert manifest.class_names == ["0", "1", "2", "3"]
    assert set(manifest.records.loc[manifest.records["split"] == "val", "path"].str.split("/").str[0]) == {"val"}


def test_csv_with_extra_columns_and_absolute_path_inside_root(flat_images):
    files = sorted(p.name for p in flat_images.iterdir())
    lines = ["file,label,group,site"]
    for i, name in enumerate(files):
        path = str(flat_images / name) if i == 0 else name
        lines.append(f"{path},{name[1]},g{i // 2},site{i % 3}")
    (flat_images / "labels.csv").write_text("\n".join(lines))
    manifest = load_source(flat_images / "labels.csv")
    assert len(manifest) == 12 and manifest.class_names == ["0", "1", "2"]
    assert list(manifest.records.columns[-2:]) == ["group", "site"]
    first = manifest.records.iloc[0]
    assert (
        first["path"] == files[0] and first["group"] == "g0" and first["site"] == "site0" and len(first["sha256"]) == 64
    )


def test_multi_label_csv_and_json(flat_images):
    files = sorted(p.name for p in flat_images.iterdir())
    (flat_images / "tags.csv").write_text(
        "path,labels\n" + "\n".join(f"{f},digit{f[1]}|{'odd' if int(f[1]) % 2 else 'even'}" for f in files)
    )
    manifest = load_source(flat_images / "tags.csv")
    assert manifest.multi_label and manifest.class_names == ["digit0", "digit1", "digit2", "even", "odd"]
    assert manifest.records.iloc[0]["label"] == "digit0|even"
    matrix = manifest.label_matrix(manifest.class_names)
    assert matrix.shape == (12, 5) and (matrix.sum(1) == 2).all()
    with pytest.raises(ValueError, match="multi-label"):
        manifest.label_indices(manifest.class_names)

    (flat_images / "tags.json").write_text(json.dumps([{"file": f, "label": ["outdoor", "cat"]} for f in files]))
    assert load_source(flat_images / "tags.json").records["label"].unique().tolist() == ["cat|outdoor"]
    (flat_images / "map.json").write_text(json.dumps({f: f[1] for f in files}))
    assert load_source(flat_images / "map.json").class_names == ["0", "1", "2"]


def test_manifest_errors_name_the_file_and_problem(flat_images):
    (flat_images / "bad.csv").write_text("name,category\nx.png,1\n")
    with pytest.raises(DataSourceError, match=r"bad.csv has no path column"):
        load_source(flat_images / "bad.csv")
    (flat_images / "bad.json").write_text("[1, 2, 3]")
    with pytest.raises(DataSourceError, match=r"bad.json cannot be parsed"):
        load_source(flat_images / "bad.json")


def _zip_dir(src: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for path in sorted(src.rglob("*")):
            zf.write(path, Path("digits") / path.relative_to(src))
    return dest


def test_zip_and_tar_archives(digits_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLF_STATE", str(tmp_path / "state"))
    zipped = _zip_dir(digits_dir, tmp_path / "digits.zip")
    assert len(load_source(zipped)) == 300
    tarred = tmp_path / "digits.tar.gz"
    with tarfile.open(tarred, "w:gz") as tf:
        tf.add(digits_dir, arcname="digits")
    manifest = load_source(tarred)
    assert len(manifest) == 300 and manifest.class_names == [str(d) for d in range(10)]


@pytest.mark.parametrize(
    "member, message",
    [
        ("../evil.png", "escapes the extraction folder"),
        ("/etc/evil.png", "absolute path"),
        ("a/../../evil.png", "escapes"),
    ],
)
def test_zip_slip_is_refused_naming_the_member(tmp_path, member, message):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/fine.png", b"x")
        zf.writestr(member, b"payload")
    with pytest.raises(ArchiveError, match=message) as err:
        extract(archive, tmp_path / "out")
    assert repr(member) in str(err.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.png").exists()
    assert not list(tmp_path.glob(".extract-*")), "a refused archive leaves nothing behind"


def test_tar_links_and_caps_are_refused(tmp_path):
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("data/passwd.png")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(ArchiveError, match=r"'data/passwd.png' is a link"):
        extract(archive, tmp_path / "out")

    big = tmp_path / "big.tar"
    with tarfile.open(big, "w") as tf:
        for i in range(3):
            data = bytes(1000)
            info = tarfile.TarInfo(f"x/{i}.png")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(ArchiveError, match="size cap"):
        extract(big, tmp_path / "out2", ArchiveLimits(max_total_bytes=2500))
    with pytest.raises(ArchiveError, match="more than 2 members"):
        extract(big, tmp_path / "out3", ArchiveLimits(max_members=2))


def test_hostile_manifest_paths_are_quarantined_without_being_read(flat_images, tmp_path, monkeypatch):
    secret = tmp_path / "secret.png"
    shutil.copy(next(flat_images.iterdir()), secret)
    (flat_images / "escape.png").symlink_to(secret)
    good = sorted(p.name for p in flat_images.iterdir() if p.suffix == ".png" and not p.is_symlink())[0]
    (flat_images / "hostile.csv").write_text(
        f"file,label\n{good},ok\n../secret.png,x\n../../../../etc/passwd,x\n{secret},x\nescape.png,x\n"
    )
    opened: list[str] = []
    real_open = builtins.open

    def spying_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spying_open)
    monkeypatch.setattr(io, "open", spying_open)  # pathlib's read_bytes goes through io.open
    manifest = load_source(flat_images / "hostile.csv")
    kept, quarantine = check_images(manifest, ValidationConfig())[:2]
    monkeypatch.undo()
    assert kept.records["path"].tolist() == [good]
    assert sorted(quarantine.records["reason"]) == ["outside_root"] * 4
    assert not [p for p in opened if "secret" in p or "passwd" in p], opened


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(DataSourceError, match="does not exist"):
        load_source(tmp_path / "nothing.zip")
