"""Exports and the INT8 choice: round trips with metadata, parity with torch, recipe selection by
(injected) speed and accuracy, the serving choice in a bundle, and `imgclf export` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from pydantic import ValidationError

from imgclf.bundle import ONNX_FILE, ONNX_INT8_FILE, read_onnx_metadata, serving_model, set_serving_model
from imgclf.data.cache import decoded_images
from imgclf.export import exporter
from imgclf.export.exporter import ExportConfig, ExportedModel, ExportImages, export_checked
from imgclf.export.int8_report import recipe_table_markdown
from imgclf.export.int8_search import NO_RECIPE, search_int8
from imgclf.export.onnx import export_onnx, onnx_logits, parity
from imgclf.export.quantize import DEFAULT_CANDIDATES, RECIPE_METADATA_KEY, Int8Recipe, quantize_int8
from imgclf.export.torchscript import export_torchscript, load_torchscript
from imgclf.inference import predict_logits
from imgclf.latency import LatencyReport
from imgclf.models.trained import TrainedModel

PER_CHANNEL, PER_TENSOR = Int8Recipe(), Int8Recipe(per_channel=False)


@pytest.fixture(scope="module")
def data(small_model):
    """(trained, fp32 ONNX, calibration images, test images, test labels, torch logits on them)."""
    trained, manifest = small_model
    spec = trained.preprocess
    test = manifest.subset("test")
    images = decoded_images(test, spec)
    return (
        trained,
        export_onnx(trained),
        decoded_images(manifest.subset("val"), spec)[:64],
        images,
        test.label_indices(trained.class_names),
        predict_logits(trained.build(), images, spec),
    )


def fake_measure(rates: dict[str, float]):
    """A Measure that reports the given batch-32 images/s per label and records the call order."""
    calls: list[str] = []

    def measure(label, run_batch):
        calls.append(label)
        ms = 32_000 / rates[label]
        return LatencyReport(p50_ms=ms / 32, p95_ms=ms / 32, batch32_images_per_s=rates[label], batch32_p50_ms=ms)

    return measure, calls


def test_onnx_and_torchscript_round_trip_with_metadata_and_parity(data):
    trained, fp32, _, images, _, reference = data
    class_names, spec = read_onnx_metadata(fp32)
    assert class_names == trained.class_names and spec == trained.preprocess
    onnx_parity = parity(reference, onnx_logits(fp32, images, spec))
    assert onnx_parity.max_abs_logit_diff == pytest.approx(0, abs=1e-3) and onnx_parity.top1_agreement == 1.0

    module, ts_names, ts_spec = load_torchscript(export_torchscript(trained))
    assert ts_names == trained.class_names and ts_spec == trained.preprocess
    result = parity(reference, predict_logits(module, images, ts_spec))
    assert result.max_abs_logit_diff < 1e-4 and result.top1_agreement == 1.0
    assert predict_logits(module, images[:1], ts_spec).shape == (
        1,
        len(class_names),
    )  # traced at batch 2, any batch runs


def test_openvino_ir_carries_metadata_and_matches_torch(data, tmp_path):
    from imgclf.export.openvino_ir import (
        compile_openvino,
        export_openvino,
        openvino_available,
        openvino_logits,
        read_openvino_metadata,
    )

    missing = openvino_available()
    if missing is not None:
        pytest.skip(missing)
    trained, fp32, _, images, _, reference = data
    xml = export_openvino(fp32, tmp_path / "model.xml")
    assert xml.with_suffix(".bin").is_file()
    assert read_openvino_metadata(xml) == (trained.class_names, trained.preprocess)
    result = parity(reference, openvino_logits(compile_openvino(xml, "f32"), images, trained.preprocess))
    assert result.max_abs_logit_diff < 1e-3 and result.top1_agreement == 1.0


def test_int8_file_keeps_metadata_records_its_recipe_and_runs(data):
    trained, fp32, calibration, images, labels, reference = data
    recipe = Int8Recipe(format="QOperator", calibration="Percentile")
    int8 = quantize_int8(fp32, calibration[:40], trained.preprocess, recipe)  # 40: full batches and a short one
    proto = onnx.load_from_string(int8)
    assert read_onnx_metadata(int8) == (trained.class_names, trained.preprocess)
    assert Int8Recipe.model_validate_json({p.key: p.value for p in proto.metadata_props}[RECIPE_METADATA_KEY]) == recipe
    assert any(node.op_type == "QLinearConv" for node in proto.graph.node)
    logits = onnx_logits(int8, images, trained.preprocess)
    assert parity(reference, logits).top1_agreement >= 0.95 and (logits.argmax(1) == labels).mean() > 0.85


def test_recipes_are_strict_frozen_and_distinctly_named():
    names = [r.name for r in DEFAULT_CANDIDATES]
    assert len(set(names)) == len(names) and 4 <= len(names) <= 6
    assert "qdq-s8s8-pertensor-minmax" in names and "qdq-u8s8-perchannel-minmax" in names
    assert (
        Int8Recipe(op_types=("Conv",), fp32_nodes=("a", "b")).name == "qdq-u8s8-perchannel-minmax-ops=conv-fp32=2nodes"
    )
    with pytest.raises(ValidationError, match="per_chanel"):
        Int8Recipe(per_chanel=False)
    with pytest.raises(ValidationError):
        PER_CHANNEL.per_channel = False
    with pytest.raises(ValidationError, match="min_sped"):
        ExportConfig(min_sped=2)


def test_a_slower_recipe_loses_and_a_failing_one_is_recorded(data):
    trained, fp32, calibration, images, labels, _ = data
    broken = Int8Recipe(fp32_nodes=("no_such_node",))
    # per-channel is the recipe that is really fastest here; the injected clock makes it slower than fp32
    measure, calls = fake_measure({"fp32": 100.0, PER_CHANNEL.name: 90.0, PER_TENSOR.name: 150.0})
    search = search_int8(
        fp32,
        calibration,
        images,
        labels,
        trained.preprocess,
        tolerance=0.1,
        min_agreement=0.0,
        candidates=[PER_CHANNEL, PER_TENSOR, broken],
        measure=measure,
    )
    assert search.chosen == PER_TENSOR.name and search.serve == "int8"
    assert search.chosen_model is not None and read_onnx_metadata(search.chosen_model)[0] == trained.class_names
    rows = {row.recipe: row for row in search.report().recipes}
    assert rows[PER_CHANNEL.name].speedup == pytest.approx(0.9) and not rows[PER_CHANNEL.name].ok
    assert rows[PER_CHANNEL.name].why == "speedup 0.90x < required 1.05x"
    assert rows[PER_TENSOR.name].chosen and rows[PER_TENSOR.name].speedup == pytest.approx(1.5)
    assert not rows[broken.name].ok and "no_such_node" in rows[broken.name].why and rows[broken.name].speedup is None
    assert search.summary().startswith(f"serving INT8 recipe {PER_TENSOR.name}: 1.50x")
    # three rounds over fp32 and the two recipes that quantised, in an order rotated every round
    assert sorted(calls) == sorted(["fp32", PER_CHANNEL.name, PER_TENSOR.name] * 3) and calls[:3] != calls[3:6]


def test_speeds_within_noise_are_a_tie_that_accuracy_breaks(data):
    trained, fp32, calibration, images, labels, _ = data
    clearly_faster, _ = fake_measure({"fp32": 100.0, PER_CHANNEL.name: 150.0, PER_TENSOR.name: 120.0})
    search = search_int8(
        fp32,
        calibration,
        images,
        labels,
        trained.preprocess,
        tolerance=1.0,
        min_agreement=0.0,
        candidates=[PER_CHANNEL, PER_TENSOR],
        measure=clearly_faster,
    )
    assert search.chosen == PER_CHANNEL.name  # 25% faster wins whatever the accuracy
    tie, _ = fake_measure({"fp32": 100.0, PER_CHANNEL.name: 150.0, PER_TENSOR.name: 146.0})
    search = search_int8(
        fp32,
        calibration,
        images,
        labels,
        trained.preprocess,
        tolerance=1.0,
        min_agreement=0.0,
        candidates=[PER_CHANNEL, PER_TENSOR],
        measure=tie,
    )
    rows = search.report().recipes
    assert search.chosen == max(rows, key=lambda r: (r.accuracy, r.top1_agreement, r.speedup)).recipe
    assert [r.why for r in rows if not r.chosen] == ["qualifies; another recipe was chosen"]


def _where_per_tensor_int8_flips(fp32: bytes, calibration: np.ndarray, spec) -> tuple[np.ndarray, np.ndarray]:
    """Noise images on which per-tensor INT8's top-1 differs from fp32's, and fp32's answers there."""
    noise = np.random.default_rng(0).integers(0, 256, (512, spec.image_size, spec.image_size, 3), dtype=np.uint8)
    fp32_top1 = onnx_logits(fp32, noise, spec).argmax(1)
    differs = fp32_top1 != onnx_logits(quantize_int8(fp32, calibration, spec, PER_TENSOR), noise, spec).argmax(1)
    assert differs.any(), "INT8 agreed with fp32 on all 512 noise images: nothing flips to test with"
    return noise[differs], fp32_top1[differs]


def test_a_recipe_that_flips_images_loses_even_when_accuracy_holds(data):
    """The test images, plus noise images on which per-tensor INT8 disagrees with fp32 (whether a real
    test image flips depends on the CPU's INT8 kernels): with any accuracy drop allowed, agreement alone
    must reject the recipes that flip."""
    trained, fp32, calibration, images, labels, _ = data
    spec = trained.preprocess
    flipped, fp32_answers = _where_per_tensor_int8_flips(fp32, calibration, spec)
    images, labels = np.concatenate([images, flipped]), np.concatenate([labels, fp32_answers])
    fast, _ = fake_measure({"fp32": 100.0, PER_CHANNEL.name: 300.0, PER_TENSOR.name: 300.0})
    search = search_int8(
        fp32,
        calibration,
        images,
        labels,
        spec,
        tolerance=1.0,
        min_agreement=1.0,
        candidates=[PER_CHANNEL, PER_TENSOR],
        measure=fast,
    )
    rows = search.report().recipes
    assert all(row.ok == (row.top1_agreement >= 1.0) for row in rows)
    flipped = [row for row in rows if row.top1_agreement < 1.0]
    assert flipped and all(row.why.startswith("top-1 agreement with fp32") for row in flipped)
    assert "top-1 agreement with fp32 >= 1.0" in recipe_table_markdown(search.report())


def test_fp32_is_served_when_every_recipe_is_slower(data):
    trained, fp32, calibration, images, labels, _ = data
    measure, _ = fake_measure({"fp32": 100.0, PER_CHANNEL.name: 104.0, PER_TENSOR.name: 80.0})
    search = search_int8(
        fp32,
        calibration,
        images,
        labels,
        trained.preprocess,
        tolerance=0.1,
        min_agreement=0.0,
        candidates=[PER_CHANNEL, PER_TENSOR],
        measure=measure,
    )
    assert search.chosen is None and search.serve == "fp32" and search.chosen_model is None
    assert search.summary() == NO_RECIPE == "no INT8 recipe beat fp32; serving fp32"
    assert [row.why for row in search.report().recipes] == [
        "speedup 1.04x < required 1.05x",
        "speedup 0.80x < required 1.05x",
    ]
    assert search.best_agreeing() is not None  # still available to write for inspection
    assert NO_RECIPE in recipe_table_markdown(search.report())


def test_an_inaccurate_recipe_loses_however_fast(data):
    """On images where this recipe's top-1 differs from fp32, labelled with fp32's answers, its
    accuracy drop is 1.0: it must be rejected although the clock says it is 10x faster."""
    trained, fp32, calibration, _, _, _ = data
    spec = trained.preprocess
    flipped, fp32_answers = _where_per_tensor_int8_flips(fp32, calibration, spec)
    measure, _ = fake_measure({"fp32": 100.0, PER_TENSOR.name: 1000.0})
    search = search_int8(fp32, calibration, flipped, fp32_answers, spec, candidates=[PER_TENSOR], measure=measure)
    (row,) = search.report().recipes
    assert row.accuracy_drop == pytest.approx(1.0) and row.speedup == pytest.approx(10.0)
    assert search.chosen is None and row.why == "accuracy drop 1.0000 > tolerance 0.01"


def test_held_out_split_reports_parity_and_int8_agreement(data):
    trained, _, calibration, images, labels, reference = data
    half = len(images) // 2  # choose on the first half, report on the second
    config = ExportConfig(candidates=[PER_CHANNEL], tolerance=0.1, min_agreement=0.0)
    split = ExportImages(calibration, images[:half], labels[:half], images[half:], labels[half:])
    exported, _ = export_checked(trained, split, config, fake_measure({"fp32": 100.0, PER_CHANNEL.name: 300.0})[0])
    report = exported.report
    assert report.eval_images == half and report.test_images == len(images) - half
    assert report.test_onnx_max_abs_logit_diff < 1e-3 and report.test_onnx_top1_agreement == 1.0
    assert report.onnx_max_abs_embedding_diff < 1e-3 and report.test_onnx_max_abs_embedding_diff < 1e-3
    int8_top1 = onnx_logits(exported.onnx_int8, images[half:], trained.preprocess).argmax(1)
    assert report.test_int8_top1_agreement == pytest.approx((int8_top1 == reference[half:].argmax(1)).mean())
    assert report.test_int8_accuracy == pytest.approx((int8_top1 == labels[half:]).mean())
    assert report.test_int8_accuracy_drop == pytest.approx(report.test_torch_accuracy - report.test_int8_accuracy)


def test_bundle_serves_int8_only_when_chosen(data, tmp_path):
    from zenml.enums import VisualizationType

    from imgclf.serving.predictor import Predictor
    from materializers.model import ExportedModelMaterializer

    trained, _, calibration, images, labels, _ = data
    config = ExportConfig(candidates=[PER_TENSOR], tolerance=0.1, min_agreement=0.0)
    lost, _ = export_checked(
        trained,
        ExportImages(calibration, images, labels),
        config,
        fake_measure({"fp32": 100.0, PER_TENSOR.name: 50.0})[0],
    )
    won, _ = export_checked(
        trained,
        ExportImages(calibration, images, labels),
        config,
        fake_measure({"fp32": 100.0, PER_TENSOR.name: 300.0})[0],
    )
    assert lost.onnx_int8 is None and lost.serving_file == ONNX_FILE and lost.report.serve == "fp32"
    assert (
        won.onnx_int8 is not None and won.serving_file == ONNX_INT8_FILE and won.report.int8_recipe == PER_TENSOR.name
    )

    for name, exported in (("lost", lost), ("won", won)):  # what the register step writes
        bundle = trained.save(tmp_path / name)
        (bundle / ONNX_FILE).write_bytes(exported.onnx)
        if exported.onnx_int8 is not None:
            (bundle / ONNX_INT8_FILE).write_bytes(exported.onnx_int8)
        set_serving_model(bundle, exported.serving_file)
        assert Predictor.from_path(bundle).onnx_path.name == exported.serving_file
        assert TrainedModel.load(bundle).class_names == trained.class_names  # the spec still loads

        store = tmp_path / f"artifact-{name}"
        store.mkdir()
        materializer = ExportedModelMaterializer(uri=str(store))
        materializer.save(exported)
        loaded = materializer.load(ExportedModel)
        assert (loaded.onnx_int8 is None) == (exported.onnx_int8 is None) and loaded.report == exported.report
        visuals = materializer.save_visualizations(exported)
        markdown = next(path for path, kind in visuals.items() if kind == VisualizationType.MARKDOWN)
        page = Path(markdown).read_text()
        assert f"serving {exported.serving_file}" in page and PER_TENSOR.name in page

    with pytest.raises(FileNotFoundError, match=r"model\.int8\.onnx"):
        set_serving_model(tmp_path / "lost", ONNX_INT8_FILE)
    assert serving_model(tmp_path / "nowhere") == ONNX_FILE


def test_imgclf_export_writes_every_format_and_a_report(small_model, digits_dir, tmp_path, monkeypatch, capsys):
    from imgclf.cli import main
    from imgclf.data.prepare import prepare_data
    from imgclf.data.split import SplitConfig

    trained, _ = small_model
    bundle = trained.save(tmp_path / "bundle")
    with pytest.raises(SystemExit, match="calibration needs images"):
        main(["export", str(bundle), "--out", str(tmp_path / "out")])

    monkeypatch.setattr(exporter, "DEFAULT_CANDIDATES", (PER_CHANNEL, PER_TENSOR))  # two recipes keep the test short
    out = tmp_path / "out"
    assert main(["export", str(bundle), "--data", str(digits_dir), "--out", str(out), "--tolerance", "0.05"]) == 0
    report = json.loads((out / "export_report.json").read_text())
    for name in ("model.onnx", "model.int8.onnx", "model.torchscript.pt", "int8_recipes.md", "export_report.json"):
        assert (out / name).is_file() and name in report["files"]
    assert report["onnx_max_abs_logit_diff"] < 1e-3 and report["onnx_top1_agreement"] == 1.0
    split = prepare_data(digits_dir, SplitConfig(seed=trained.info["train_config"]["seed"])).manifest
    # val (as imgclf train splits the data) chooses the recipe; test reports parity untouched by that choice
    assert (
        report["eval_images"] == len(split.subset("val")) > 0 and report["test_images"] == len(split.subset("test")) > 0
    )
    assert report["test_onnx_max_abs_logit_diff"] < 1e-3 and report["test_onnx_top1_agreement"] == 1.0
    assert report["torchscript"]["top1_agreement"] == 1.0
    assert [row["recipe"] for row in report["int8_search"]["recipes"]] == [PER_CHANNEL.name, PER_TENSOR.name]
    assert report["serve"] == ("int8" if report["int8_recipe"] else "fp32") and report["int8_file"]["served"] == (
        report["serve"] == "int8"
    )
    assert read_onnx_metadata(out / "model.int8.onnx")[0] == trained.class_names
    runtimes = [row["runtime"] for row in report["runtimes"]]
    assert runtimes[:2] == ["torch fp32", "ORT fp32"] and runtimes[2].startswith(
        f"ORT INT8 {report['int8_file']['recipe']}"
    )
    assert all(row["images_per_s"] > 0 and row["batch1_p95_ms"] >= row["batch1_p50_ms"] for row in report["runtimes"])
    if "skipped" not in report["openvino"]:
        assert (
            (out / "model.xml").is_file()
            and (out / "model.bin").is_file()
            and report["openvino"]["top1_agreement"] == 1.0
        )
    printed = capsys.readouterr().out
    assert report["int8_summary"] in printed and "b32 img/s" in printed
