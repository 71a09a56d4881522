from typing import Annotated

from zenml import log_metadata, step

from imgclf.data.fetch import loggable
from imgclf.data.manifest import DatasetManifest
from imgclf.data.sources import SourceConfig, load_source


@step
def ingest(data_source: str, config: SourceConfig = SourceConfig()) -> Annotated[DatasetManifest, "raw_manifest"]:
    """Every file the source holds (folder, split folder, CSV/JSON manifest, archive or URL) as a
    manifest row, readable or not."""
    manifest = load_source(data_source, config)
    log_metadata(
        metadata={
            "received": len(manifest),
            "data_source": loggable(str(data_source)),  # a URL without its query (tokens) or credentials
            "multi_label": manifest.multi_label,
            "presplit": "split" in manifest.records.columns,
        }
    )
    return manifest
