"""A split manifest's images decoded at one PreprocessSpec, with their targets: what training,
evaluation, export and compression read. Each split is decoded on first use, through the cache, so a
caller that needs only the test images never decodes the training set."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from imgclf.data.cache import decoded_images
from imgclf.data.manifest import DatasetManifest
from imgclf.data.split import SPLITS
from imgclf.preprocess import PreprocessSpec


@dataclass(frozen=True)
class DecodedSplit:
    name: str
    manifest: DatasetManifest  # this split's rows, in the order of `images`
    images: np.ndarray  # uint8 (N, H, W, 3), memory-mapped from the cache
    targets: np.ndarray  # class indices (N,), or multi-hot (N, C) for a multi-label data set

    def __len__(self) -> int:
        return len(self.targets)


class DecodedSplits:
    """train / val / test of a split manifest at `spec`, targets in `class_names` order (default:
    the data's own classes; a model's list must contain every class of the data)."""

    def __init__(self, manifest: DatasetManifest, spec: PreprocessSpec, class_names: list[str] | None = None) -> None:
        if "split" not in manifest.records.columns:
            raise ValueError("the manifest has no `split` column: split the data before decoding it for a model")
        self.manifest = manifest
        self.spec = spec
        self.class_names = list(class_names) if class_names is not None else manifest.class_names
        unknown = sorted(set(manifest.class_names) - set(self.class_names))
        if unknown:
            raise ValueError(f"the data has classes the model does not know: {unknown}")
        self.multi_label = manifest.multi_label
        self._splits: dict[str, DecodedSplit] = {}

    @cached_property
    def data_hash(self) -> str:
        return self.manifest.content_hash()

    def __getitem__(self, name: str) -> DecodedSplit:
        if name not in SPLITS:
            raise KeyError(f"no split {name!r}; splits are {SPLITS}")
        if name not in self._splits:
            rows = self.manifest.subset(name)
            targets = rows.targets(self.class_names, self.multi_label)
            self._splits[name] = DecodedSplit(name, rows, decoded_images(rows, self.spec), targets)
        return self._splits[name]

    @property
    def train(self) -> DecodedSplit:
        return self["train"]

    @property
    def val(self) -> DecodedSplit:
        return self["val"]

    @property
    def test(self) -> DecodedSplit:
        return self["test"]

    def require(self, *names: str) -> None:
        """Fail, naming the split, when one of `names` has no rows."""
        empty = [name for name in names if not (self.manifest.records["split"] == name).any()]
        if empty:
            raise ValueError(f"the split has no {' and no '.join(empty)} images")
