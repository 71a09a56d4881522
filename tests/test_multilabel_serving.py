"""Multi-label models in the service: thresholds tuned once on val at the end of training, stored in
the bundle (model.json) and the ONNX metadata (fp32 and INT8), read back, used by evaluation, and
answered as every label at or above its threshold plus the per-label scores."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import warnings

import numpy as np
import pytest
from PIL import Image

from imgclf.bundle import (
    META_MULTI_LABEL,
    ONNX_FILE,
    SPEC_FILE,
    BundleError,
    onnx_metadata,
    read_onnx_metadata,
    thresholds_from_record,
)
from imgclf.serving.answers import answer

TAGS = {
    d: [t for t, ok in (("even", d % 2 == 0), ("small", d < 5), ("round", d in (0, 6, 8, 9))) if ok] or ["none"]
    for d in range(10)
}
TINY = {"arch": "resnet10t", "pretrained": False, "image_size": 16, "batch_size": 32, "lr": 3e-3, "num_workers": 0}


def _sigmoid(z):
    return 1 / (1 + math.exp(-z))


# -- the answer, as a pure function ------------------------------------------------------------------


def test_single_label_answer_is_softmax_top_k():
    names = ["cat", "dog", "fox"]
    got = answer(np.log([1.0, 4.0, 2.0]), names, top_k=2, thresholds=None)
    assert set(got) == {"label", "confidence", "top_k"}  # nothing multi-label in a single-label answer
    assert got["label"] == "dog" and got["confidence"] == pytest.approx(4 / 7)
    assert [(t["label"], round(t["confidence"], 6)) for t in got["top_k"]] == [
        ("dog", round(4 / 7, 6)),
        ("fox", round(2 / 7, 6)),
    ]
    assert len(answer(np.zeros(3), names, top_k=0)["top_k"]) == 1  # clamped to 1..C
    assert len(answer(np.zeros(3), names, top_k=99)["top_k"]) == 3


def test_multi_label_answer_is_every_label_at_or_above_its_threshold():
    names = ["cat", "dog", "fox", "owl"]
    logits = np.array([2.0, -1.0, 0.5, 0.0])  # sigmoid: 0.881, 0.269, 0.622, 0.5
    got = answer(logits, names, top_k=2, thresholds=[0.9, 0.2, 0.6, 0.5])
    # cat has the highest score but misses its threshold; owl sits exactly on its own (>= keeps it)
    assert got["labels"] == ["fox", "owl", "dog"]  # by score
    assert got["scores"] == pytest.approx({n: _sigmoid(z) for n, z in zip(names, logits)})
    assert got["label"] == "cat" and got["confidence"] == pytest.approx(_sigmoid(2.0))
    assert [t["label"] for t in got["top_k"]] == ["cat", "fox"]
    assert answer(logits, names, top_k=1, thresholds=[0.99] * 4)["labels"] == []  # none present


def test_multi_label_scores_of_extreme_logits_do_not_overflow():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = answer(np.array([1000.0, -1000.0], dtype=np.float32), ["a", "b"], 2, thresholds=[0.5, 0.5])
    assert got["scores"] == {"a": 1.0, "b": 0.0} and got["labels"] == ["a"]


def test_answer_refuses_logits_or_thresholds_of_the_wrong_length():
    with pytest.raises(ValueError, match="expected 3 logits"):
        answer(np.zeros(2), ["a", "b", "c"], 1)
    with pytest.raises(ValueError, match="expected 2 thresholds"):
        answer(np.zeros(2), ["a", "b"], 1, thresholds=[0.5])


@pytest.mark.parametrize(
    "record, problem",
    [
        ({}, "no thresholds by label"),
        ({"thresholds": {"a": 0.5}}, r"no threshold for \['b'\]"),
        ({"thresholds": {"a": 0.5, "b": 1.5}}, "'b' must be a number in \\[0, 1\\]"),
        ({"thresholds": {"a": 0.5, "b": True}}, "'b' must be a number"),
        ({"thresholds": {"a": 0.5, "b": float("nan")}}, "'b' must be a number"),
    ],
)
def test_a_malformed_threshold_record_is_a_clear_error(record, problem):
    with pytest.raises(BundleError, match=problem):
        thresholds_from_record(record, ["a", "b"], "model.json")


# -- a real multi-label model: tuned, stored, read back, served --------------------------------------


@pytest.fixture(scope="module")
def multilabel(digits_dir):
    """A tiny multi-label model trained on the digits tagged even / small / round / none, and its split."""
    from imgclf.data.ingest import ingest_folder
    from imgclf.data.manifest import DatasetManifest
    from imgclf.data.split import SplitConfig, stratified_split
    from imgclf.train.config import TrainConfig
    from imgclf.train.loop import fit_manifest

    records = ingest_folder(digits_dir).records
    records = records.assign(label=["|".join(sorted(TAGS[int(d)])) for d in records["label"]])
    manifest = stratified_split(DatasetManifest(str(digits_dir), records), SplitConfig(seed=0))
    assert manifest.multi_label
    return fit_manifest(manifest, TrainConfig(**TINY, epochs=2)), manifest


def test_thresholds_are_tuned_on_val_with_the_shipped_weights(multilabel):
    from imgclf.data.decoded import DecodedSplits
    from imgclf.inference import predict_logits
    from imgclf.models.thresholds import tune_thresholds
    from imgclf.scores import sigmoid

    trained, manifest = multilabel
    assert trained.class_names == ["even", "none", "round", "small"]
    val = DecodedSplits(manifest, trained.preprocess, trained.class_names).val
    expected = tune_thresholds(val.targets, sigmoid(predict_logits(trained.build(), val.images, trained.preprocess)))
    assert trained.thresholds == pytest.approx(expected.tolist())
    assert all(0.0 <= t <= 1.0 for t in trained.thresholds)


def test_thresholds_are_stored_in_the_bundle_and_the_onnx_files(multilabel, tmp_path):
    from imgclf.export.onnx import export_onnx
    from imgclf.export.quantize import quantize_int8
    from imgclf.models.trained import TrainedModel

    trained, _ = multilabel
    bundle = trained.save(tmp_path / "bundle")
    by_label = dict(zip(trained.class_names, trained.thresholds))
    assert json.loads((bundle / SPEC_FILE).read_text())["multi_label"] == {"thresholds": by_label}
    assert TrainedModel.load(bundle).thresholds == trained.thresholds

    fp32 = export_onnx(trained)
    meta = onnx_metadata(fp32)
    assert (meta.class_names, meta.preprocess, meta.thresholds) == (
        trained.class_names,
        trained.preprocess,
        trained.thresholds,
    )
    assert read_onnx_metadata(fp32) == (trained.class_names, trained.preprocess)  # the old reader is unchanged
    calibration = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    assert onnx_metadata(quantize_int8(fp32, calibration, trained.preprocess)).thresholds == trained.thresholds


@pytest.fixture(scope="module")
def single_label(digits_dir):
    from imgclf.data.ingest import ingest_folder
    from imgclf.data.split import SplitConfig, stratified_split
    from imgclf.train.config import TrainConfig
    from imgclf.train.loop import fit_manifest

    manifest = stratified_split(ingest_folder(digits_dir), SplitConfig(seed=0))
    return fit_manifest(manifest, TrainConfig(**TINY, epochs=1))


def test_a_single_label_model_carries_nothing_new(single_label, tmp_path):
    import onnx

    from imgclf.export.onnx import export_onnx

    assert single_label.thresholds is None
    assert "multi_label" not in json.loads((single_label.save(tmp_path / "b") / SPEC_FILE).read_text())
    fp32 = export_onnx(single_label)
    assert META_MULTI_LABEL not in {p.key for p in onnx.load_from_string(fp32).metadata_props}
    assert onnx_metadata(fp32).thresholds is None


def test_a_malformed_record_in_model_json_names_the_file(multilabel, tmp_path):
    from imgclf.models.trained import TrainedModel

    trained, _ = multilabel
    bundle = trained.save(tmp_path / "bundle")
    spec = json.loads((bundle / SPEC_FILE).read_text())
    del spec["multi_label"]["thresholds"]["round"]
    (bundle / SPEC_FILE).write_text(json.dumps(spec))
    with pytest.raises(BundleError, match=r"model\.json: the multi-label record has no threshold for \['round'\]"):
        TrainedModel.load(bundle)


def test_evaluation_decides_with_the_stored_thresholds(multilabel):
    from imgclf.evaluate.evaluation import EvaluationConfig, evaluate_model
    from imgclf.evaluate.gate import GateConfig

    trained, manifest = multilabel
    stored = dataclasses.replace(trained, thresholds=[0.1, 0.2, 0.3, 0.4])  # not what val would give
    config = EvaluationConfig(n_bootstrap=50, measure_latency=False)
    report = evaluate_model(stored, manifest, GateConfig(min_accuracy=0.0), config).report
    assert report.multi_label.thresholds == pytest.approx({"even": 0.1, "none": 0.2, "round": 0.3, "small": 0.4})
    assert any("stored with the model" in note for note in report.notes)


def _png(digits_dir, digit: int) -> bytes:
    path = sorted((digits_dir / str(digit)).glob("*.png"))[0]
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_predictor_answers_a_multi_label_model_with_its_stored_thresholds(multilabel, digits_dir, tmp_path):
    from imgclf.export.onnx import export_onnx
    from imgclf.serving.predictor import Predictor

    trained, _ = multilabel
    names = trained.class_names
    image = _png(digits_dir, 6)
    bundle = trained.save(tmp_path / "bundle")
    (bundle / ONNX_FILE).write_bytes(export_onnx(trained))
    got = Predictor.from_path(bundle, "7").predict(image, top_k=2)
    assert set(got) == {"labels", "scores", "label", "confidence", "top_k", "model_version"}
    assert got["model_version"] == "7" and set(got["scores"]) == set(names)
    by_score = sorted(names, key=lambda n: -got["scores"][n])
    assert got["label"] == by_score[0] and [t["label"] for t in got["top_k"]] == by_score[:2]
    stored = dict(zip(names, trained.thresholds))
    assert got["labels"] == [n for n in by_score if got["scores"][n] >= stored[n]]

    # the thresholds in the file decide: all at 0 -> every label; all at 1 -> none (scores are < 1)
    for value, expected in ((0.0, by_score), (1.0, [])):
        onnx_file = tmp_path / f"at-{value}.onnx"
        onnx_file.write_bytes(export_onnx(dataclasses.replace(trained, thresholds=[value] * len(names))))
        served = Predictor(onnx_file).predict(image, top_k=2)
        assert served["labels"] == expected and served["scores"] == pytest.approx(got["scores"])


def test_the_predictor_answers_a_single_label_model_as_before(single_label, digits_dir, tmp_path):
    from imgclf.export.onnx import export_onnx
    from imgclf.serving.predictor import Predictor

    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(export_onnx(single_label))
    got = Predictor(onnx_file).predict(_png(digits_dir, 3), top_k=10)
    assert set(got) == {"label", "confidence", "top_k", "model_version"}  # no labels / scores
    assert sum(t["confidence"] for t in got["top_k"]) == pytest.approx(1.0)  # softmax over the 10 digits
    assert got["label"] == got["top_k"][0]["label"] and got["confidence"] == max(t["confidence"] for t in got["top_k"])
