"""One way to get data for a model outside the pipeline: a source and a split config in, a split
manifest out, with every file that was left out and why.

`imgclf train`, `export`, `prune`, `distill`, `lr-find` and the benchmarks all call `prepare_data`, so
they see the same images in the same splits. It runs the per-file checks of validation (unreadable
files and unlabelled ones are skipped, each with its reason) but not the dataset suite; the pipeline's
validate step is the place for that.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from imgclf.data.file_checks import check_images
from imgclf.data.manifest import QUARANTINE_COLUMNS, DatasetManifest, Quarantine
from imgclf.data.sources import SourceConfig, load_source
from imgclf.data.split import SplitConfig, stratified_split
from imgclf.data.validation_config import ValidationConfig


@dataclass
class PreparedData:
    """A split manifest of readable, labelled images, and the files that did not make it."""

    manifest: DatasetManifest
    skipped: Quarantine  # every received file left out, with its reason
    received: int
    source: str
    split_config: SplitConfig

    def describe_skipped(self) -> str:
        """`skipped 2 of 302 files: {'not_an_image': 1, 'no_label': 1}`, or "" when none was."""
        if not len(self.skipped):
            return ""
        return f"skipped {len(self.skipped)} of {self.received} files: {self.skipped.reasons()}"


def prepare_data(
    source: str | Path | DatasetManifest, split: SplitConfig = SplitConfig(), source_config: SourceConfig = SourceConfig()
) -> PreparedData:
    """Load `source` (any source kind, or a manifest already loaded), skip unusable and unlabelled
    files with their reasons, and split the rest with `split`."""
    received = source if isinstance(source, DatasetManifest) else load_source(source, source_config)
    readable, quarantine = check_images(received, ValidationConfig())
    records = readable.records
    unlabelled = records["label"].isna() | (records["label"].astype(str).str.strip("|") == "")
    no_label = pd.DataFrame(
        {"path": records.loc[unlabelled, "path"], "reason": "no_label", "detail": "the file has no label"},
        columns=QUARANTINE_COLUMNS,
    )
    skipped = Quarantine(pd.concat([quarantine.records, no_label], ignore_index=True))
    manifest = stratified_split(DatasetManifest(received.root, records[~unlabelled]), split)
    label = str(source) if not isinstance(source, DatasetManifest) else received.root
    return PreparedData(manifest=manifest, skipped=skipped, received=len(received), source=label, split_config=split)

