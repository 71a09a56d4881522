from typing import Annotated

from zenml import log_metadata, step

from imgclf.data.ingest import ingest_folder
from imgclf.data.manifest import DatasetManifest


@step
def ingest(data_source: str) -> Annotated[DatasetManifest, "raw_manifest"]:
    """Every file under `data_source` (a folder per class) as a manifest row, readable or not."""
    manifest = ingest_folder(data_source)
    log_metadata(metadata={"received": len(manifest), "data_source": str(data_source)})
    return manifest
