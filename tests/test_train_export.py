"""Training loop, evaluation metrics, bundle round trip and ONNX / INT8 export parity."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from sklearn.metrics import f1_score

from imgclf.bundle import read_onnx_metadata
from imgclf.data.cache import decoded_images
from imgclf.evaluate.gate import GateConfig, quality_gate
from imgclf.evaluate.metrics import evaluate_predictions
from imgclf.export.onnx import export_onnx, onnx_logits, parity
from imgclf.export.quantize import quantize_int8
from imgclf.inference import predict_logits
from imgclf.models.trained import TrainedModel


@pytest.fixture(scope="module")
def test_split(small_model):
    trained, manifest = small_model
    test = manifest.subset("test")
    return decoded_images(test, trained.preprocess), test.label_indices(trained.class_names)


def test_training_learns_and_keeps_best_epoch(small_model, test_split):
    trained, _ = small_model
    history = trained.history
    assert len(history) == 3 and history[-1]["train_loss"] < history[0]["train_loss"]
    assert trained.info["best_val_score"] == max(h["val_accuracy"] for h in history)
    images, labels = test_split
    accuracy = (predict_logits(trained.build(), images, trained.preprocess).argmax(1) == labels).mean()
    assert accuracy > 0.9


def test_bundle_round_trip_is_exact(small_model, tmp_path, test_split):
    trained, _ = small_model
    trained.save(tmp_path / "bundle")
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == [
        "model.json",
        "model.safetensors",
        "projection.safetensors",
    ]
    loaded = TrainedModel.load(tmp_path / "bundle")
    assert loaded.class_names == trained.class_names and loaded.preprocess == trained.preprocess
    images, _ = test_split
    np.testing.assert_array_equal(
        predict_logits(loaded.build(), images[:16], loaded.preprocess),
        predict_logits(trained.build(), images[:16], trained.preprocess),
    )


def test_metrics_match_sklearn_and_gate_decides():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0, 2])
    report = evaluate_predictions(y_true, y_pred, ["a", "b", "c"])
    assert report.accuracy == pytest.approx(5 / 7)
    assert report.macro_f1 == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert report.confusion == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    assert quality_gate(report, GateConfig(min_accuracy=0.7)).passed
    failed = quality_gate(report, GateConfig(min_accuracy=0.8))
    assert not failed.passed and "test_accuracy 0.7143 < 0.8" in failed.explain()


def test_onnx_matches_torch_and_carries_its_metadata(small_model, test_split):
    trained, manifest = small_model
    images, labels = test_split
    fp32 = export_onnx(trained)
    proto = onnx.load_from_string(fp32)
    onnx.checker.check_model(proto)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    class_names, spec = read_onnx_metadata(fp32)
    assert class_names == trained.class_names and spec == trained.preprocess
    reference = predict_logits(trained.build(), images, trained.preprocess)
    result = parity(reference, onnx_logits(fp32, images, spec))
    assert result.max_abs_logit_diff < 1e-3 and result.top1_agreement == 1.0

    int8 = quantize_int8(fp32, decoded_images(manifest.subset("val"), spec), spec)
    assert read_onnx_metadata(int8)[0] == trained.class_names
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load_from_string(int8).graph.node)
    int8_logits = onnx_logits(int8, images, spec)
    assert parity(reference, int8_logits).top1_agreement >= 0.95
    assert (int8_logits.argmax(1) == labels).mean() > 0.85
