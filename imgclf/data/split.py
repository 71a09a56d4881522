"""Stratified, seeded train/val/test split. Each class is split on its own so every split keeps the
class proportions, and the same seed and manifest always give the same assignment."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from imgclf.data.manifest import DatasetManifest


class SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: float = Field(0.70, gt=0, lt=1)
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)
    seed: int = 42

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> "SplitConfig":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions train+val+test must sum to 1, got {total:.3f}")
        return self


def stratified_split(manifest: DatasetManifest, config: SplitConfig) -> DatasetManifest:
    """Return the manifest with a `split` column in {train, val, test}.

    Rows are ordered by sha256 before shuffling so the result does not depend on file order or paths.
    A class with fewer than 3 images keeps at least one image in train.
    """
    records = manifest.records.copy()
    ordered = records.sort_values(["label", "sha256", "path"])
    rng = np.random.default_rng(config.seed)
    split = pd.Series("train", index=records.index, dtype=object)
    for _, group in ordered.groupby("label", sort=True):
        idx = group.index.to_numpy()[rng.permutation(len(group))]
        n = len(idx)
        n_test = min(int(round(n * config.test)), n - 1)
        n_val = min(int(round(n * config.val)), n - 1 - n_test)
        split.loc[idx[:n_test]] = "test"
        split.loc[idx[n_test : n_test + n_val]] = "val"
    records["split"] = split
    return DatasetManifest(manifest.root, records)
