from typing import Annotated

import mlflow
from zenml import log_metadata, step
from zenml.logger import get_logger

from imgclf.data.manifest import DatasetManifest, Quarantine
from imgclf.data.validate import console_report
from imgclf.data.validate import validate as validate_dataset
from imgclf.data.validation_config import ValidationConfig
from imgclf.data.validation_result import SuiteResult

logger = get_logger(__name__)


@step(experiment_tracker=True)
def validate(
    manifest: DatasetManifest, config: ValidationConfig = ValidationConfig()
) -> tuple[
    Annotated[DatasetManifest, "validated_manifest"],
    Annotated[Quarantine, "quarantine"],
    Annotated[SuiteResult, "data_validation"],
]:
    """Quarantine unusable files with a reason, run the Great Expectations suite on the rest, publish
    the result (metadata, MLflow), and only then stop the run if an error-severity check failed."""
    kept, quarantine, suite = validate_dataset(manifest, config, raise_on_error=False)
    for level, line in console_report(suite, quarantine):
        logger.log(level, line)
    log_metadata(
        metadata={
            **suite.counts,  # received == kept + quarantined + duplicates
            "suite_success": suite.success,
            "failed_errors": sorted({c.check for c in suite.failures("error")}),
            "failed_warnings": sorted({c.check for c in suite.failures("warning")}),
            "quarantine_reasons": quarantine.reasons(),
        }
    )
    mlflow.log_metrics({f"data_{k}": v for k, v in suite.counts.items()})
    mlflow.log_dict(suite.to_dict(), "data_validation/suite.json")
    mlflow.log_text(suite.to_html(), "data_validation/suite.html")
    mlflow.log_dict(quarantine.records.to_dict("records"), "data_validation/quarantine.json")
    suite.raise_for_errors(manifest.root)
    return kept, quarantine, suite
