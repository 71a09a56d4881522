"""The reference profile a version's traffic is compared with: the prediction-log columns (image
statistics, confidence, margin, entropy, label, embedding) computed by the shipped ONNX model on the
held-out images, the same way the service computes them for each request. Written into the release
folder, so it is versioned with the model in the registry, and read back for the version being served."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from imgclf.bundle import ONNX_EMBEDDING, ONNX_INPUT, ONNX_OUTPUT, REFERENCE_PROFILE_FILE, onnx_metadata, serving_model
from imgclf.data.decode import open_image
from imgclf.monitoring.record import margin_and_entropy
from imgclf.monitoring.stats import STATISTICS, image_statistics
from imgclf.scores import probabilities

BATCH = 64


def reference_profile(onnx_path: str | Path, images: Sequence[str | Path], limit: int = 2000) -> pd.DataFrame:
    """One row per image (the first `limit`, in the given order): the six statistics at model input size,
    the top-1 label, its confidence, margin and entropy (nats), and the embedding when the model has one."""
    import onnxruntime as ort

    meta = onnx_metadata(onnx_path)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    outputs = [ONNX_OUTPUT] + [o.name for o in session.get_outputs() if o.name == ONNX_EMBEDDING]
    rows: list[dict] = []
    chosen = list(images)[:limit]
    for start in range(0, len(chosen), BATCH):
        pixels = [meta.preprocess.resize(open_image(path)[0]) for path in chosen[start : start + BATCH]]
        results = session.run(outputs, {ONNX_INPUT: meta.preprocess.normalize(np.stack(pixels))})
        probs = probabilities(results[0], meta.thresholds is not None)
        embeddings = results[1] if len(results) > 1 else [None] * len(pixels)
        for image, p, embedding in zip(pixels, probs, embeddings, strict=True):
            margin, entropy = margin_and_entropy(p)
            stats = image_statistics(image)
            rows.append(
                {
                    **{name: float(getattr(stats, name)) for name in STATISTICS},
                    "label": str(meta.class_names[int(np.argmax(p))]),
                    "confidence": float(p.max()),
                    "margin": margin,
                    "pred_entropy": entropy,
                    "embedding": None if embedding is None else np.asarray(embedding, dtype=np.float32),
                }
            )
    return pd.DataFrame(rows)


def write_reference_profile(bundle_dir: str | Path, images: Sequence[str | Path]) -> Path:
    """The profile of the bundle's served ONNX model on `images`, as parquet in the bundle."""
    bundle_dir = Path(bundle_dir)
    profile = reference_profile(bundle_dir / serving_model(bundle_dir), images)
    if profile["embedding"].isna().all():
        profile = profile.drop(columns="embedding")
    else:
        profile["embedding"] = profile["embedding"].map(lambda v: v.tolist())
    path = bundle_dir / REFERENCE_PROFILE_FILE
    profile.to_parquet(path, index=False)
    return path


def read_reference_profile(bundle_dir: str | Path) -> pd.DataFrame | None:
    """The bundle's reference profile (embeddings as float32 arrays), or None for a bundle without one."""
    path = Path(bundle_dir) / REFERENCE_PROFILE_FILE
    if not path.is_file():
        return None
    profile = pd.read_parquet(path)
    if "embedding" in profile:
        profile["embedding"] = profile["embedding"].map(lambda v: np.asarray(v, dtype=np.float32))
    return profile
