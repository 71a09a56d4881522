from typing import Annotated

from zenml import log_metadata, step

from imgclf.data.manifest import DatasetManifest
from imgclf.data.split import SplitConfig, stratified_split


@step
def split(manifest: DatasetManifest, config: SplitConfig = SplitConfig()) -> Annotated[DatasetManifest, "split_manifest"]:
    """Stratified, seeded train/val/test assignment (a `split` column on the manifest)."""
    result = stratified_split(manifest, config)
    counts = result.records["split"].value_counts()
    log_metadata(metadata={name: int(counts.get(name, 0)) for name in ("train", "val", "test")})
    return result
