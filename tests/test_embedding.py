"""The embedding output: PCA of the pooled features fitted at training, stored in the bundle, exported
as the ONNX model's second output (fp32 and INT8) and matching torch; older bundles without one still
export and serve logits."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

from imgclf.bundle import (
    ONNX_EMBEDDING,
    ONNX_FILE,
    ONNX_OUTPUT,
    PROJECTION_FILE,
    SPEC_EMBEDDING,
    BundleError,
    onnx_metadata,
    read_spec,
    write_spec,
)
from imgclf.data.cache import decoded_images
from imgclf.export.onnx import export_onnx, has_embedding, onnx_outputs, parity
from imgclf.export.quantize import quantize_int8
from imgclf.inference import predict_logits, predict_logits_and_features
from imgclf.models.factory import create
from imgclf.models.features import logits_and_features
from imgclf.models.projection import DEFAULT_DIM, fit_projection, sample_indices
from imgclf.models.trained import TrainedModel
from imgclf.preprocess import PreprocessSpec
from imgclf.train.loop import with_projection

EMBEDDING_TOLERANCE = 1e-3  # ExportConfig.max_abs_embedding_diff, what the export checks


@pytest.fixture(scope="module")
def splits(small_model):
    """(trained, train images, test images) of the digits at the model's spec."""
    trained, manifest = small_model
    spec = trained.preprocess
    return trained, decoded_images(manifest.subset("train"), spec), decoded_images(manifest.subset("test"), spec)


def _session_outputs(model: bytes) -> list[tuple[str, list]]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return [(o.name, o.shape) for o in session.get_outputs()]


def test_pca_is_deterministic_with_fixed_signs_and_matches_sklearn():
    pixels = load_digits().data  # 1797 real images, 64 features
    first, second = fit_projection(pixels, dim=16), fit_projection(pixels.copy(), dim=16)
    np.testing.assert_array_equal(first.components, second.components)
    np.testing.assert_array_equal(first.mean, second.mean)
    assert first.components.dtype == np.float32 and first.components.shape == (16, 64)
    np.testing.assert_allclose(first.components @ first.components.T, np.eye(16), atol=1e-5)
    rows = np.arange(16)
    assert (first.components[rows, np.abs(first.components).argmax(1)] > 0).all()  # the sign convention
    reference = PCA(n_components=16, svd_solver="full").fit(pixels)
    np.testing.assert_allclose(np.abs(first.components), np.abs(reference.components_), atol=1e-4)
    assert first.explained_variance == pytest.approx(reference.explained_variance_ratio_.sum(), rel=1e-6)
    embedding = first.apply(pixels)
    assert embedding.shape == (1797, 16) and embedding.dtype == np.float32
    np.testing.assert_allclose(np.abs(embedding), np.abs(reference.transform(pixels)), atol=1e-3)


def test_pca_keeps_only_directions_the_images_span_and_rejects_bad_input():
    pixels = load_digits().data
    assert fit_projection(pixels[:5], dim=32).dim == 4  # 5 images span 4 directions
    assert fit_projection(pixels[:100, :8], dim=32).dim == 8  # 8 features
    with pytest.raises(ValueError, match="at least 2 images"):
        fit_projection(pixels[:1])
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_projection(np.where(np.arange(64) == 3, np.nan, pixels[:10]))
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        fit_projection(pixels[0])
    with pytest.raises(ValueError, match=r"must be \(N, 64\)"):
        fit_projection(pixels).apply(pixels[:, :10])


def test_sample_is_seeded_sorted_and_capped():
    np.testing.assert_array_equal(sample_indices(10, cap=20), np.arange(10))
    picked = sample_indices(5000, cap=2048)
    assert len(picked) == 2048 and len(set(picked)) == 2048 and (np.diff(picked) > 0).all()
    np.testing.assert_array_equal(picked, sample_indices(5000, cap=2048))


def test_training_fits_the_projection_on_the_shipped_weights_deterministically(splits):
    trained, train_images, _ = splits
    projection = trained.projection
    assert projection is not None and projection.dim == DEFAULT_DIM and projection.features == 512  # resnet10t
    assert projection.images == len(train_images)
    again = with_projection(dataclasses.replace(trained, projection=None), train_images).projection
    twice = with_projection(dataclasses.replace(trained, projection=None), train_images).projection
    np.testing.assert_array_equal(again.components, twice.components)
    np.testing.assert_array_equal(again.mean, twice.mean)
    np.testing.assert_allclose(again.components, projection.components, atol=1e-4)


def test_bundle_stores_and_loads_the_projection(splits, tmp_path):
    trained, _, _ = splits
    bundle = trained.save(tmp_path / "bundle")
    assert sorted(p.name for p in bundle.iterdir()) == ["model.json", "model.safetensors", PROJECTION_FILE]
    record = read_spec(bundle)[SPEC_EMBEDDING]
    assert record["dim"] == DEFAULT_DIM and record["features"] == 512 and record["method"] == "pca"
    assert record["output"] == ONNX_EMBEDDING and record["file"] == PROJECTION_FILE
    loaded = TrainedModel.load(bundle).projection
    np.testing.assert_array_equal(loaded.components, trained.projection.components)
    np.testing.assert_array_equal(loaded.mean, trained.projection.mean)

    spec = read_spec(bundle)
    write_spec(bundle, {**spec, SPEC_EMBEDDING: {**record, "dim": 16}})
    with pytest.raises(BundleError, match=r"expected \(F,\) and \(16, F\)"):
        TrainedModel.load(bundle)
    write_spec(bundle, spec)
    (bundle / PROJECTION_FILE).unlink()
    with pytest.raises(BundleError, match=f"{PROJECTION_FILE} is missing"):
        TrainedModel.load(bundle)


def test_onnx_has_logits_then_embedding_matching_torch(splits):
    trained, _, images = splits
    fp32 = export_onnx(trained)
    assert _session_outputs(fp32) == [(ONNX_OUTPUT, ["batch", 10]), (ONNX_EMBEDDING, ["batch", DEFAULT_DIM])]
    meta = {p.key: p.value for p in onnx.load_from_string(fp32).metadata_props}
    assert json.loads(meta["imgclf.embedding"])["dim"] == DEFAULT_DIM
    assert onnx_metadata(fp32).embedding_dim == DEFAULT_DIM
    logits, embedding = onnx_outputs(fp32, images, trained.preprocess, [ONNX_OUTPUT, ONNX_EMBEDDING])
    assert embedding.shape == (len(images), DEFAULT_DIM) and embedding.dtype == np.float32
    torch_logits, pooled = predict_logits_and_features(trained.build(), images, trained.preprocess)
    result = parity(torch_logits, logits, trained.projection.apply(pooled), embedding)
    assert result.max_abs_logit_diff < 1e-3 and result.top1_agreement == 1.0
    assert result.max_abs_embedding_diff < EMBEDDING_TOLERANCE
    assert np.abs(embedding).max() > 100 * EMBEDDING_TOLERANCE  # the tolerance is small beside the values
    np.testing.assert_array_equal(torch_logits, predict_logits(trained.build(), images, trained.preprocess))


def test_embedding_metadata_without_the_output_is_refused(splits):
    trained, _, _ = splits
    proto = onnx.load_from_string(export_onnx(dataclasses.replace(trained, projection=None)))
    proto.metadata_props.add(key="imgclf.embedding", value=json.dumps(trained.projection.record()))
    with pytest.raises(BundleError, match="describes an embedding, but the model's outputs are"):
        onnx_metadata(proto.SerializeToString())
    proto.metadata_props[-1].value = json.dumps({"dim": "32"})
    with pytest.raises(BundleError, match="no positive integer `dim`"):
        onnx_metadata(proto.SerializeToString())


def test_int8_keeps_the_embedding_output_with_an_fp32_projection(splits):
    trained, train_images, images = splits
    spec = trained.preprocess
    fp32 = export_onnx(trained)
    int8 = quantize_int8(fp32, train_images[:128], spec)
    assert [name for name, _ in _session_outputs(int8)] == [ONNX_OUTPUT, ONNX_EMBEDDING]
    assert onnx_metadata(int8).embedding_dim == DEFAULT_DIM  # the INT8 file copies the metadata
    graph = onnx.load_from_string(int8).graph
    producer = {out: node for node in graph.node for out in node.output}
    assert producer[ONNX_EMBEDDING].op_type == "MatMul"  # not re-quantised to 256 levels
    (fp32_embedding,) = onnx_outputs(fp32, images, spec, [ONNX_EMBEDDING])
    (int8_embedding,) = onnx_outputs(int8, images, spec, [ONNX_EMBEDDING])
    cosine = (fp32_embedding * int8_embedding).sum(1) / (
        np.linalg.norm(fp32_embedding, axis=1) * np.linalg.norm(int8_embedding, axis=1)
    )
    assert np.median(cosine) > 0.95


def test_a_bundle_without_projection_exports_logits_only_and_serves(splits, tmp_path):
    from imgclf.serving.predictor import Predictor

    trained, _, images = splits
    old = dataclasses.replace(trained, projection=None)
    bundle = old.save(tmp_path / "old")
    assert SPEC_EMBEDDING not in read_spec(bundle) and not (bundle / PROJECTION_FILE).exists()
    assert TrainedModel.load(bundle).projection is None
    fp32 = export_onnx(TrainedModel.load(bundle))
    assert _session_outputs(fp32) == [(ONNX_OUTPUT, ["batch", 10])] and not has_embedding(fp32)
    assert onnx_metadata(fp32).embedding_dim is None
    (bundle / ONNX_FILE).write_bytes(fp32)
    png = io.BytesIO()
    Image.fromarray(images[0]).save(png, format="PNG")
    old_answer = Predictor.from_path(bundle).predict(png.getvalue())
    new = trained.save(tmp_path / "new")
    (new / ONNX_FILE).write_bytes(export_onnx(trained))
    assert Predictor.from_path(new).predict(png.getvalue())["label"] == old_answer["label"]
    assert old_answer["label"] in trained.class_names


@pytest.mark.parametrize(
    "arch", ["torchvision/shufflenet_v2_x0_5", "deit_tiny_distilled_patch16_224", "tf_efficientnet_lite0"]
)
def test_pooled_features_and_export_for_other_architectures(arch, splits):
    _, train_images, images = splits
    torch.manual_seed(0)
    model, mean, std = create(arch, 10, image_size=32)
    model.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        logits, pooled = logits_and_features(model, x)
        torch.testing.assert_close(logits, model(x))
    assert pooled.ndim == 2 and len(pooled) == 3
    spec = PreprocessSpec(image_size=32, mean=mean, std=std)
    trained = TrainedModel(arch, [str(i) for i in range(10)], spec, model.state_dict())
    trained = with_projection(trained, train_images[:200], dim=8)
    assert trained.projection.features == pooled.shape[1] and trained.projection.dim == 8
    reference, features = predict_logits_and_features(trained.build(), images, spec)
    got_logits, got_embedding = onnx_outputs(export_onnx(trained), images, spec, [ONNX_OUTPUT, ONNX_EMBEDDING])
    result = parity(reference, got_logits, trained.projection.apply(features), got_embedding)
    assert result.max_abs_logit_diff < 1e-3 and result.max_abs_embedding_diff < EMBEDDING_TOLERANCE


def test_a_pruned_network_gets_a_projection_of_its_own(splits):
    from imgclf.compress.prune import PruneConfig, prune_model

    trained, train_images, images = splits
    pruned = prune_model(trained, PruneConfig(amount=0.4, recalibration_images=0))
    assert pruned.projection is None  # the original's would not fit: its pooled features changed
    pruned = with_projection(pruned, train_images)
    assert pruned.projection.features < trained.projection.features
    reference, features = predict_logits_and_features(pruned.build(), images, pruned.preprocess)
    logits, embedding = onnx_outputs(export_onnx(pruned), images, pruned.preprocess, [ONNX_OUTPUT, ONNX_EMBEDDING])
    assert parity(reference, logits, pruned.projection.apply(features), embedding).max_abs_embedding_diff < 1e-3
