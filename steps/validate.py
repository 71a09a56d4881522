from typing import Annotated, Tuple

from zenml import log_metadata, step
from zenml.logger import get_logger

from imgclf.data.manifest import DatasetManifest, Quarantine
from imgclf.data.validate import SuiteResult, ValidationConfig, validate as validate_dataset

logger = get_logger(__name__)


@step
def validate(
    manifest: DatasetManifest, config: ValidationConfig = ValidationConfig()
) -> Tuple[
    Annotated[DatasetManifest, "validated_manifest"],
    Annotated[Quarantine, "quarantine"],
    Annotated[SuiteResult, "data_validation"],
]:
    """Quarantine unusable files with a reason, then run the Great Expectations suite on what is kept."""
    kept, quarantine, suite = validate_dataset(manifest, config)
    for row in quarantine.records.itertuples():
        logger.warning("quarantined %s: %s (%s)", row.path, row.reason, row.detail)
    logger.info("validation: received %d, kept %d, quarantined %d\n%s", len(manifest), len(kept), len(quarantine), suite.summary())
    log_metadata(
        metadata={
            "received": len(manifest),
            "kept": len(kept),
            "quarantined": len(quarantine),
            "suite_success": suite.success,
            "quarantine_reasons": quarantine.reasons(),
        }
    )
    return kept, quarantine, suite
