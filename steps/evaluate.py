from typing import Annotated, Tuple

import mlflow
from zenml import log_metadata, step
from zenml.logger import get_logger

from imgclf.bundle import TrainedModel
from imgclf.data.cache import decoded_images
from imgclf.data.manifest import DatasetManifest
from imgclf.evaluate.metrics import EvaluationReport, GateConfig, GateResult, evaluate_predictions, quality_gate
from imgclf.train.loop import predict_logits

logger = get_logger(__name__)


@step(experiment_tracker=True)
def evaluate(
    model: TrainedModel, manifest: DatasetManifest, gate: GateConfig = GateConfig()
) -> Tuple[Annotated[EvaluationReport, "evaluation"], Annotated[GateResult, "quality_gate"]]:
    """Metrics on the held-out test split and the quality-gate verdict that deploy obeys."""
    test = manifest.subset("test")
    logits = predict_logits(model.build(), decoded_images(test, model.preprocess), model.preprocess)
    report = evaluate_predictions(test.label_indices(model.class_names), logits.argmax(1), model.class_names)
    verdict = quality_gate(report, gate)
    logger.info("test accuracy %.4f, macro F1 %.4f; quality gate %s: %s",
                report.accuracy, report.macro_f1, "PASSED" if verdict.passed else "FAILED", verdict.explain())
    mlflow.log_metrics(report.metrics())
    mlflow.log_dict({"class_names": report.class_names, "confusion": report.confusion}, "confusion_matrix.json")
    log_metadata(metadata={**report.metrics(), "quality_gate_passed": verdict.passed})
    return report, verdict
