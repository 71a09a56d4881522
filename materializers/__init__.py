"""ZenML materializers for the project's artifact types. Importing this package registers them."""

from materializers.dataset import DatasetManifestMaterializer, QuarantineMaterializer
from materializers.model import ExportedModelMaterializer, TrainedModelMaterializer
from materializers.reports import PromotionRecordMaterializer, ReportMaterializer
from materializers.validation import SuiteResultMaterializer

__all__ = [
    "DatasetManifestMaterializer",
    "ExportedModelMaterializer",
    "PromotionRecordMaterializer",
    "QuarantineMaterializer",
    "ReportMaterializer",
    "SuiteResultMaterializer",
    "TrainedModelMaterializer",
]
