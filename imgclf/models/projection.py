"""The embedding projection: PCA of a model's pooled (pre-logits) features, fitted once at the end of
training on the weights that ship, stored with them and exported into the ONNX model as its second
output, so the service can log a compact embedding of every image without torch (drift on embeddings).

Deterministic by construction: a seeded sample of at most `MAX_IMAGES` images, an exact SVD in float64
(numpy, no randomised solver) and a fixed sign per component. Numpy and safetensors only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgclf.bundle import ONNX_EMBEDDING, PROJECTION_FILE, BundleError

DEFAULT_DIM = 32
MAX_IMAGES = 2048  # enough for 32 stable directions; keeps the fit cheap on a large data set
SAMPLE_SEED = 0
METHOD = "pca"
SOLVER = "numpy.linalg.svd (exact, float64); each component's largest |loading| positive"


@dataclass(frozen=True)
class Projection:
    """embedding = (pooled - mean) @ components.T: float32 mean (F,) and components (D, F), with how
    it was fitted (number of images, share of the features' variance the D components keep)."""

    mean: np.ndarray
    components: np.ndarray
    images: int
    explained_variance: float

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    @property
    def features(self) -> int:
        return int(self.components.shape[1])

    def apply(self, pooled: np.ndarray) -> np.ndarray:
        """The embedding (N, D) float32 of pooled features (N, F), computed in float64."""
        pooled = np.asarray(pooled, dtype=np.float64)
        if pooled.ndim != 2 or pooled.shape[1] != self.features:
            raise ValueError(f"pooled features must be (N, {self.features}), got shape {pooled.shape}")
        centred = pooled - self.mean.astype(np.float64)
        return (centred @ self.components.astype(np.float64).T).astype(np.float32)

    def record(self) -> dict[str, Any]:
        """model.json's `embedding` entry: what the ONNX second output is and how it was fitted."""
        return {
            "output": ONNX_EMBEDDING,
            "dim": self.dim,
            "features": self.features,
            "method": METHOD,
            "solver": SOLVER,
            "fitted_on": f"pooled features of the train split, a seeded ({SAMPLE_SEED}) sample of at most {MAX_IMAGES}",
            "images": self.images,
            "explained_variance": self.explained_variance,
            "file": PROJECTION_FILE,
        }


def sample_indices(n: int, cap: int = MAX_IMAGES, seed: int = SAMPLE_SEED) -> np.ndarray:
    """Which of `n` images the projection is fitted on: all of them, or a seeded sorted sample of `cap`."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


def fit_projection(pooled: np.ndarray, dim: int = DEFAULT_DIM) -> Projection:
    """PCA of pooled features (N, F) to min(dim, F, N - 1) components (past N - 1 they would be
    arbitrary directions of zero variance); ValueError when there is nothing to fit."""
    x = np.asarray(pooled, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"pooled features must be (N, F), got shape {x.shape}")
    if len(x) < 2:
        raise ValueError(f"a projection needs at least 2 images, got {len(x)}")
    if not np.all(np.isfinite(x)):
        raise ValueError("pooled features contain NaN or inf")
    if dim < 1:
        raise ValueError(f"the embedding needs at least 1 dimension, got {dim}")
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    k = min(dim, x.shape[1], len(x) - 1)
    components = vt[:k]
    signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    variance = s**2
    explained = float(variance[:k].sum() / variance.sum()) if variance.sum() > 0 else 0.0
    return Projection(
        mean=mean.astype(np.float32),
        components=components.astype(np.float32),
        images=len(x),
        explained_variance=explained,
    )


def save_projection(projection: Projection, directory: str | Path) -> None:
    """`projection.safetensors` (tensors `mean` and `components`) in the bundle folder."""
    from safetensors.numpy import save_file

    tensors = {
        "mean": np.ascontiguousarray(projection.mean, dtype=np.float32),
        "components": np.ascontiguousarray(projection.components, dtype=np.float32),
    }
    save_file(tensors, str(Path(directory) / PROJECTION_FILE))


def load_projection(directory: str | Path, record: object) -> Projection:
    """The projection a bundle's `embedding` record describes; BundleError naming the problem when the
    file is missing or does not match the record."""
    from safetensors.numpy import load_file

    path = Path(directory) / PROJECTION_FILE
    where = f"the bundle {directory}"
    if not isinstance(record, dict) or not isinstance(record.get("dim"), int):
        raise BundleError(f"{where}: the embedding record has no integer `dim`: {record!r:.200}")
    if not path.is_file():
        raise BundleError(f"{where}: model.json describes an embedding but {PROJECTION_FILE} is missing")
    tensors = load_file(str(path))
    mean, components = tensors.get("mean"), tensors.get("components")
    if mean is None or components is None:
        raise BundleError(f"{where}: {PROJECTION_FILE} must hold tensors `mean` and `components`")
    if components.ndim != 2 or mean.shape != (components.shape[1],) or components.shape[0] != record["dim"]:
        raise BundleError(
            f"{where}: {PROJECTION_FILE} has mean {mean.shape} and components {components.shape}, "
            f"expected (F,) and ({record['dim']}, F)"
        )
    return Projection(
        mean=mean,
        components=components,
        images=int(record.get("images", 0)),
        explained_variance=float(record.get("explained_variance", float("nan"))),
    )
