"""The prediction-log columns drift is measured on, and the embedding vectors as plain columns."""

from __future__ import annotations

import numpy as np
import pandas as pd

STAT_COLUMNS = ("brightness", "contrast", "saturation", "sharpness", "entropy", "clipped")
PREDICTION_COLUMNS = ("confidence", "margin", "pred_entropy")
CLASS_COLUMN = "label"
EMBEDDING_COLUMN = "embedding"


def has_embeddings(frame: pd.DataFrame) -> bool:
    """Every row carries an embedding (a model exported without one, or a mix, is not compared)."""
    return EMBEDDING_COLUMN in frame and len(frame) > 0 and bool(frame[EMBEDDING_COLUMN].notna().all())


def embedding_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The `embedding` column (one vector per row) as columns e0..eD-1; empty when rows lack one."""
    if not has_embeddings(frame):
        return pd.DataFrame(index=range(len(frame)))
    vectors = np.stack([np.asarray(v, dtype=np.float64) for v in frame[EMBEDDING_COLUMN]])
    return pd.DataFrame(vectors, columns=[f"e{i}" for i in range(vectors.shape[1])])
