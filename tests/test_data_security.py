"""The data side held to the service's standard: archives hashed in a stream, tar metadata headers
bounded, extraction staged beside its target, the decoded cache reading only validated bytes, a
bundle serving only its own files, and registry filters that a model name cannot change."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
import tracemalloc
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

import imgclf.data.archive as archive_module
from imgclf.bundle import BundleError, serving_model, set_serving_model, write_spec
from imgclf.data.archive import MAX_TAR_HEADER_BYTES, ArchiveError, extract
from imgclf.data.cache import CacheBuildError, decoded_cache_path
from imgclf.data.file_checks import check_images
from imgclf.data.ingest import ingest_folder
from imgclf.data.sources import SourceConfig, load_source
from imgclf.data.validation_config import ValidationConfig
from imgclf.preprocess import PreprocessSpec
from imgclf.registry import latest_version, stage_history


def _png(value: int, size: int = 8) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((size, size), value, np.uint8), "L").save(out, "PNG")
    return out.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


# --- the archive's hash -------------------------------------------------------------------------


def test_archive_hash_is_streamed_not_read_whole(tmp_path, monkeypatch):
    archive = tmp_path / "set.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for label in "ab":
            for i in range(2):
                _add(tf, f"set/{label}/{i}.png", _png(40 * i + (label == "b") * 100))
    read_bytes = Path.read_bytes

    def no_whole_archive(self: Path) -> bytes:
        assert self != archive, "the archive was read into memory whole"
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", no_whole_archive)
    manifest = load_source(archive, SourceConfig(work_dir=str(tmp_path / "work")))
    assert len(manifest) == 4
    digest = hashlib.sha256(read_bytes(archive)).hexdigest()[:24]
    assert Path(manifest.root).is_relative_to((tmp_path / "work" / "extracted" / digest).resolve())


# --- tar metadata headers -----------------------------------------------------------------------


def _gnu_long_name(path: Path, length: int) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        _add(tf, "d/" + "n" * (length - 6) + ".png")


def _gnu_long_link(path: Path, length: int) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo("d/link.png")
        info.type, info.linkname = tarfile.SYMTYPE, "t" * length
        tf.addfile(info)


def _pax_member(path: Path, length: int) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("d/a.png")
        info.pax_headers = {"comment": "c" * length}
        tf.addfile(info, io.BytesIO(b""))


def _pax_global(path: Path, length: int) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "c" * length}) as tf:
        _add(tf, "d/a.png")


@pytest.mark.parametrize(
    ("write", "kind"),
    [
        (_gnu_long_name, "GNU long-name"),
        (_gnu_long_link, "GNU long-link"),
        (_pax_member, "pax"),
        (_pax_global, "pax global"),
    ],
)
def test_huge_tar_metadata_header_is_refused_unread(tmp_path, write, kind):
    archive = tmp_path / "huge.tar"
    payload = 8 * 1024 * 1024
    write(archive, payload)
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveError, match=rf"the {kind} header at byte \d+ holds \d+ bytes, over the cap") as err:
            extract(archive, tmp_path / "out")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(archive) in str(err.value)
    assert peak < payload // 4, f"{peak} bytes allocated: the payload was read"
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".extract-*"))


def test_long_names_within_the_cap_extract(tmp_path):
    name = "d/" + "/".join(["n" * 100] * 3) + ".png"  # over the 100-byte ustar field
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        archive = tmp_path / f"long{fmt}.tar"
        with tarfile.open(archive, "w", format=fmt) as tf:
            _add(tf, name, b"data")
        assert (extract(archive, tmp_path / f"out{fmt}") / name).read_bytes() == b"data"
    assert MAX_TAR_HEADER_BYTES >= 2 * 4096  # twice PATH_MAX: any real path fits


def _long_name_header(name: bytes) -> bytes:
    info = tarfile.TarInfo("././@LongLink")
    info.type, info.size = tarfile.GNUTYPE_LONGNAME, len(name) + 1
    payload = name + b"\0"
    return info.tobuf(tarfile.GNU_FORMAT) + payload + b"\0" * (-len(payload) % tarfile.BLOCKSIZE)


def test_a_chain_of_metadata_headers_is_refused(tmp_path):
    member = tarfile.TarInfo("d/a.png")
    chained = tmp_path / "chain.tar"
    chained.write_bytes(
        b"".join(_long_name_header(f"d/{i}.png".encode()) for i in range(9))
        + member.tobuf(tarfile.GNU_FORMAT)
        + b"\0" * 1024
    )
    with pytest.raises(ArchiveError, match="chains more than 8 metadata headers"):
        extract(chained, tmp_path / "out")
    fine = tmp_path / "one.tar"  # a single long-name header is what GNU tar writes
    fine.write_bytes(_long_name_header(b"d/renamed.png") + member.tobuf(tarfile.GNU_FORMAT) + b"\0" * 1024)
    assert (extract(fine, tmp_path / "ok") / "d" / "renamed.png").is_file()


def test_sparse_members_are_refused(tmp_path):
    old = tmp_path / "sparse.tar"
    with tarfile.open(old, "w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo("d/sparse.png")
        info.type = tarfile.GNUTYPE_SPARSE
        tf.addfile(info)
    with pytest.raises(ArchiveError, match=r"'d/sparse\.png' is a GNU sparse file"):
        extract(old, tmp_path / "out")
    pax = tmp_path / "sparse10.tar"
    with tarfile.open(pax, "w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("d/GNUSparseFile.0/s.png")
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "d/s.png"}
        info.size = 512
        tf.addfile(info, io.BytesIO(b"99999999999999999999" + b"9" * 492))
    with pytest.raises(ArchiveError, match="is a GNU sparse file"):
        extract(pax, tmp_path / "out")


# --- staging beside the target ------------------------------------------------------------------


def test_extraction_is_staged_beside_its_target(tmp_path, monkeypatch):
    elsewhere = tmp_path / "tmpdir"
    elsewhere.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(elsewhere))  # $TMPDIR, maybe another filesystem
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        _add(tf, "d/a.png")
    moves: list[tuple[Path, Path]] = []
    replace = os.replace
    monkeypatch.setattr(archive_module.os, "replace", lambda a, b: (moves.append((Path(a), Path(b))), replace(a, b)))
    target = tmp_path / "not" / "yet" / "there"
    assert (extract(archive, target) / "d" / "a.png").is_file()
    assert [src.parent for src, _ in moves] == [target.parent] and list(elsewhere.iterdir()) == []


# --- the decoded cache reads validated bytes only -----------------------------------------------


@pytest.fixture()
def validated(tmp_path):
    root = tmp_path / "data"
    for label, base in (("a", 0), ("b", 120)):
        (root / label).mkdir(parents=True)
        for i in range(3):
            (root / label / f"{i}.png").write_bytes(_png(base + 10 * i))
    kept, quarantine = check_images(ingest_folder(root), ValidationConfig())
    assert len(kept) == 6 and len(quarantine) == 0
    return root, kept


def test_cache_refuses_a_file_swapped_after_validation(validated, tmp_path):
    root, manifest = validated
    spec = PreprocessSpec(image_size=8)
    assert decoded_cache_path(manifest, spec, cache_dir=tmp_path / "ok", workers=1).is_file()
    (root / "b" / "1.png").write_bytes(_png(255))  # a valid image, but not the one validated
    with pytest.raises(CacheBuildError, match=r"b/1\.png changed after validation") as err:
        decoded_cache_path(manifest, spec, cache_dir=tmp_path / "cache", workers=1)
    assert "validate the data again" in str(err.value)
    assert list((tmp_path / "cache").iterdir()) == [], "no partial cache is left behind"


def test_cache_refuses_rows_without_a_validated_hash(validated, tmp_path):
    _, manifest = validated
    manifest.records.loc[2, "sha256"] = ""
    with pytest.raises(CacheBuildError, match="the manifest was not validated"):
        decoded_cache_path(manifest, PreprocessSpec(image_size=8), cache_dir=tmp_path / "cache", workers=1)


def test_cache_decodes_under_the_recorded_pixel_cap(validated, tmp_path):
    _, manifest = validated
    manifest.records.loc[4, ["width", "height"]] = [4, 4]  # the 8x8 file claims what validation saw
    with pytest.raises(CacheBuildError, match=r"decompression_bomb: 8x8 = 64 pixels exceeds the cap of 16"):
        decoded_cache_path(manifest, PreprocessSpec(image_size=8), cache_dir=tmp_path / "cache", workers=1)


# --- a bundle serves only its own files ---------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../model.onnx", "/etc/model.onnx", "sub/model.onnx", "..\\model.onnx", "model.txt", "", 7, ".onnx"]
)
def test_serving_model_must_be_a_bare_onnx_name(tmp_path, name):
    write_spec(tmp_path, {"serving": {"model": name}})
    with pytest.raises(BundleError, match="serving model"):
        serving_model(tmp_path)


def test_serving_model_link_out_of_the_bundle_is_refused(tmp_path):
    bundle, outside = tmp_path / "bundle", tmp_path / "outside.onnx"
    bundle.mkdir()
    outside.write_bytes(b"onnx")
    (bundle / "model.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match="link to a file outside the bundle"):
        serving_model(bundle)
    with pytest.raises(BundleError, match="bare file name"):
        set_serving_model(bundle, "../outside.onnx")


def test_serve_names_the_bad_serving_model_without_a_traceback(tmp_path):
    from imgclf.cli import main

    write_spec(tmp_path, {"serving": {"model": "../../model.onnx"}})
    with pytest.raises(SystemExit, match=r"^imgclf serve: .*'\.\./\.\./model\.onnx': it must be a bare file name"):
        main(["serve", "--model", str(tmp_path)])


def test_serving_model_names_its_own_file(tmp_path):
    (tmp_path / "model.int8.onnx").write_bytes(b"onnx")
    set_serving_model(tmp_path, "model.int8.onnx")
    assert serving_model(tmp_path) == "model.int8.onnx"
    assert serving_model(tmp_path / "elsewhere") == "model.onnx"


# --- registry filters ---------------------------------------------------------------------------


def test_registry_filters_take_a_quoted_name_as_a_value(mlflow_uri, tmp_path):
    client = mlflow.MlflowClient()
    for name, versions in (("plain", 1), ("it's", 2), ('say "hi"', 1)):
        client.create_registered_model(name)
        for _ in range(versions):
            client.create_model_version(name, source=str(tmp_path), run_id=None)
    assert latest_version("it's") == "2" and latest_version('say "hi"') == "1"
    assert stage_history("it's") == []
    with pytest.raises(LookupError, match="no registered versions"):
        latest_version("x' OR name LIKE '%")  # a value, not a filter that matches `plain`
    with pytest.raises(LookupError, match="cannot be searched in the MLflow registry"):
        latest_version("both ' and \" quotes")
