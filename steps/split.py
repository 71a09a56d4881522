import logging
from typing import Annotated

from zenml import log_metadata, step

from imgclf.data.manifest import DatasetManifest
from imgclf.data.split import SPLITS, SplitConfig, split_report, stratified_split

log = logging.getLogger(__name__)


@step
def split(
    manifest: DatasetManifest, config: SplitConfig = SplitConfig()
) -> Annotated[DatasetManifest, "split_manifest"]:
    """Stratified, seeded, leak-free train/val/test assignment (a `split` column on the manifest).

    Groups and near-duplicates stay in one split; the step metadata holds the counts per split and per
    class per split, and how many rows were clustered together.
    """
    result = stratified_split(manifest, config)
    report = split_report(result)
    empty = [name for name in SPLITS if report[name] == 0]
    if empty:
        log.warning(
            "split: %s empty (counts %s); check the fractions, groups and any given split column",
            ", ".join(empty),
            {name: report[name] for name in SPLITS},
        )
    if report.get("clusters_across_splits"):
        log.warning(
            "split: %d near-duplicate/group clusters straddle the given splits (kept as given)",
            report["clusters_across_splits"],
        )
    log_metadata(metadata=report)
    return result
