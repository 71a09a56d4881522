"""Batch inference on the real digits: listing a folder, manifest, archive or fsspec prefix, sharding,
classifying as the service does, and accounting for every input (a truncated PNG, a text file and an
oversized file are rejected with their reasons)."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgclf.batch.classify import ClassifySettings, classify_shard, load_predictor
from imgclf.batch.gather import BatchIncomplete, merge, read_shards
from imgclf.batch.inputs import BatchInputError, Rejected, list_inputs, read_inputs
from imgclf.batch.local import classify_in_processes
from imgclf.batch.shards import plan_shards
from imgclf.monitoring.record import COLUMNS

PER_CLASS = 4


@pytest.fixture(scope="module")
def batch_dir(digits_dir, tmp_path_factory) -> Path:
    """4 digits per class (40 PNGs) plus a truncated PNG, a text file named .png and a 300 KB image."""
    root = tmp_path_factory.mktemp("batch") / "images"
    for digit in range(10):
        for path in sorted((digits_dir / str(digit)).glob("*.png"))[:PER_CLASS]:
            (root / str(digit)).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / str(digit) / path.name)
    whole = (digits_dir / "3" / sorted(p.name for p in (digits_dir / "3").glob("*.png"))[-1]).read_bytes()
    (root / "broken").mkdir()
    (root / "broken" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (root / "broken" / "notes.png").write_text("this is not an image\n")
    noise = np.random.default_rng(0).integers(0, 256, (320, 320, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "broken" / "large.png")
    return root


SMALL_CAP = 200_000  # under large.png (incompressible noise, ~300 KB), over every digit


def expected_labels(keys) -> dict[str, str]:
    return {k: k.split("/")[0] for k in keys if not k.startswith("broken/")}


def test_a_folder_lists_every_file_sorted(batch_dir):
    source = list_inputs(batch_dir)
    assert source.kind == "folder" and len(source.files) == 10 * PER_CLASS + 3
    assert list(source.files) == sorted(source.files) and "broken/notes.png" in source.files


def test_manifests_list_their_paths_and_a_missing_one_is_unreadable(batch_dir, tmp_path):
    keys = list_inputs(batch_dir).files[:5]
    csv = tmp_path / "list.csv"
    csv.write_text("label,path\n" + "".join(f"x,{batch_dir / k}\n" for k in keys) + f"x,{tmp_path / 'gone.png'}\n")
    text = batch_dir / "list.txt"
    text.write_text("# five digits\n" + "\n".join(keys) + "\n\n")
    try:
        from_csv, from_text = list_inputs(csv), list_inputs(text)
    finally:
        text.unlink()
    assert from_csv.kind == from_text.kind == "manifest" and list(from_text.files) == sorted(keys)
    read = dict(read_inputs(from_csv, from_csv.files, 1 << 20))
    assert read[str(batch_dir / keys[0])] == (batch_dir / keys[0]).read_bytes()
    gone = read[str(tmp_path / "gone.png")]
    assert isinstance(gone, Rejected) and gone.reason == "unreadable"
    (tmp_path / "bad.csv").write_text("label,name\nx,y\n")
    with pytest.raises(BatchInputError, match="no path column"):
        list_inputs(tmp_path / "bad.csv")


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_an_archive_is_read_member_by_member_in_place(batch_dir, tmp_path, suffix):
    archive = tmp_path / f"images{suffix}"
    files = list_inputs(batch_dir).files
    if suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for key in files:
                zf.write(batch_dir / key, key)
    else:
        with tarfile.open(archive, "w:gz") as tf:
            for key in files:
                tf.add(batch_dir / key, key)
    source = list_inputs(archive)
    assert source.kind == "archive" and source.files == files
    read = dict(read_inputs(source, files[3:6], SMALL_CAP))
    assert read == {k: (batch_dir / k).read_bytes() for k in files[3:6]}
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name], "nothing extracted"
    assert dict(read_inputs(source, ["broken/large.png"], SMALL_CAP))["broken/large.png"].reason == "too_large"


def test_an_archive_with_an_escaping_member_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../outside.png", b"x")
    with pytest.raises(BatchInputError, match="escapes"):
        list_inputs(archive)


def test_a_tar_with_a_link_is_refused(batch_dir, tmp_path):
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(batch_dir / "1", "1")
        link = tarfile.TarInfo("1/elsewhere.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(BatchInputError, match="link"):
        list_inputs(archive)


def test_a_decoder_failure_nobody_foresaw_is_a_rejected_row(servable_bundle, batch_dir, monkeypatch):
    import imgclf.batch.classify as classify

    source = list_inputs(batch_dir)
    shard = plan_shards(source.model_copy(update={"files": source.files[:3]}), 1).shard(0)
    real = classify.observe

    def flaky(predictor, data, measure):
        if data == (batch_dir / shard.files[1]).read_bytes():
            raise MemoryError("no room")
        return real(predictor, data, measure=measure)

    monkeypatch.setattr(classify, "observe", flaky)
    out = classify_shard(source, shard, load_predictor(servable_bundle, "1", ClassifySettings()))
    assert list(out.predictions["status"]) == ["predicted", "rejected", "predicted"]
    assert (
        out.predictions.loc[1, "error_reason"] == "unreadable"
        and "MemoryError" in out.predictions.loc[1, "error_detail"]
    )
    assert len(out.monitoring) == 2


def test_a_bucket_prefix_is_listed_and_read_through_fsspec(batch_dir):
    import fsspec

    fs = fsspec.filesystem("memory")
    keys = list_inputs(batch_dir).files[:3]
    for key in keys:
        fs.pipe(f"/batch-test/{key}", (batch_dir / key).read_bytes())
    try:
        source = list_inputs("memory://batch-test")
        assert source.kind == "prefix" and len(source.files) == 3
        read = dict(read_inputs(source, source.files, 1 << 20))
        assert sorted(read.values()) == sorted((batch_dir / k).read_bytes() for k in keys)
    finally:
        fs.rm("/batch-test", recursive=True)
    with pytest.raises(BatchInputError, match="bucket prefix"):
        list_inputs("nosuchprotocol://bucket/images")


def test_shards_are_deterministic_balanced_and_cover_every_file_once(batch_dir):
    source = list_inputs(batch_dir)
    plan = plan_shards(source, 4)
    assert plan == plan_shards(list_inputs(batch_dir), 4)
    keys = [k for shard in plan.shards for k in shard.files]
    assert sorted(keys) == list(source.files) and len(keys) == len(set(keys))
    sizes = [len(s.files) for s in plan.shards]
    assert max(sizes) - min(sizes) <= 1
    assert [len(s.files) for s in plan_shards(source.model_copy(update={"files": source.files[:2]}), 3).shards] == [
        0,
        1,
        1,
    ]
    with pytest.raises(ValueError, match="at least 1"):
        plan_shards(source, 0)


def test_a_shard_is_classified_as_the_service_answers_and_rejects_with_reasons(servable_bundle, batch_dir):
    source = list_inputs(batch_dir)
    settings = ClassifySettings(batch_size=7, max_bytes=SMALL_CAP, model_stage="production")
    predictor = load_predictor(servable_bundle, "7", settings)
    out = classify_shard(source, plan_shards(source, 1).shard(0), predictor, settings)
    pred = out.predictions.set_index("file")
    assert list(pred.index) == list(source.files)
    rejected = pred[pred["status"] == "rejected"]["error_reason"].to_dict()
    assert rejected == {
        "broken/large.png": "too_large",
        "broken/notes.png": "not_an_image",
        "broken/truncated.png": "truncated",
    }
    truth = expected_labels(source.files)
    correct = sum(pred.loc[k, "label"] == v for k, v in truth.items())
    assert correct >= 0.8 * len(truth), pred["label"]
    key = "5/" + sorted(p.name for p in (batch_dir / "5").iterdir())[0]
    service = predictor.predict((batch_dir / key).read_bytes(), top_k=3)
    assert list(pred.loc[key, "top_k_labels"]) == [t["label"] for t in service["top_k"]]
    np.testing.assert_allclose(pred.loc[key, "top_k_scores"], [t["confidence"] for t in service["top_k"]], rtol=1e-4)
    log = out.monitoring
    assert list(log.columns) == list(COLUMNS) and len(log) == len(truth)
    assert set(log["source"]) == {"batch"} and set(log["model_version"]) == {"7"}
    assert set(log["model_stage"]) == {"production"} and log["request_id"].nunique() == -(-len(truth) // 7)


def test_the_bundles_serving_choice_is_the_model_run(servable_bundle, tmp_path):
    from imgclf.bundle import ONNX_FILE, ONNX_INT8_FILE, set_serving_model

    bundle = shutil.copytree(servable_bundle, tmp_path / "bundle")
    shutil.copy(bundle / ONNX_FILE, bundle / ONNX_INT8_FILE)
    set_serving_model(bundle, ONNX_INT8_FILE)
    assert load_predictor(bundle, "1", ClassifySettings()).onnx_path.name == ONNX_INT8_FILE


@pytest.mark.slow  # spawns worker processes
def test_worker_processes_give_the_single_process_answers_and_every_input_is_accounted_for(
    servable_bundle, batch_dir, tmp_path
):
    source = list_inputs(batch_dir)
    plan = plan_shards(source, 3)
    settings = ClassifySettings(threads=1, max_bytes=SMALL_CAP)
    assert classify_in_processes(plan, servable_bundle, "7", tmp_path, workers=2, settings=settings) == len(
        source.files
    )
    predictions, monitoring = read_shards(tmp_path)
    merged, logged, summary = merge(plan, predictions, monitoring)
    assert summary.total == len(source.files) and summary.rejected == 3 and summary.shards == 3
    assert summary.reasons == {"not_an_image": 1, "too_large": 1, "truncated": 1}
    assert len(logged) == summary.predicted == 10 * PER_CLASS
    alone = classify_shard(
        source, plan_shards(source, 1).shard(0), load_predictor(servable_bundle, "7", settings), settings
    )
    pd.testing.assert_series_equal(merged["label"], alone.predictions["label"])
    with pytest.raises(BatchIncomplete, match="inputs missing"):
        merge(plan, predictions[1:], monitoring[1:])


def test_listing_an_empty_or_missing_input_says_so(tmp_path):
    with pytest.raises(BatchInputError, match="no batch input given"):
        list_inputs("")  # the config's default: never the current folder
    with pytest.raises(BatchInputError, match="does not exist"):
        list_inputs(tmp_path / "nowhere")
    with pytest.raises(BatchInputError, match="holds no files"):
        list_inputs(tmp_path)
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(BatchInputError, match="neither a folder"):
        list_inputs(tmp_path / "data.json")
