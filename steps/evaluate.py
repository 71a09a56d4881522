from typing import Annotated, Tuple

import mlflow
from zenml import log_metadata, step
from zenml.logger import get_logger

from imgclf.bundle import TrainedModel
from imgclf.data.cache import decoded_images
from imgclf.data.manifest import DatasetManifest
from imgclf.evaluate.latency import measure_model_latency
from imgclf.evaluate.metrics import EvaluationReport, GateConfig, GateResult, evaluate_probabilities, quality_gate, softmax
from imgclf.train.loop import predict_logits

logger = get_logger(__name__)


@step(experiment_tracker=True)
def evaluate(
    model: TrainedModel, manifest: DatasetManifest, gate: GateConfig = GateConfig()
) -> Tuple[Annotated[EvaluationReport, "evaluation"], Annotated[GateResult, "quality_gate"]]:
    """Metrics with bootstrap CIs, calibration and latency on the held-out test split, and the
    quality-gate verdict that deploy obeys."""
    if manifest.multi_label:
        raise NotImplementedError("the evaluate step scores single-label data sets; multi-label evaluation is not wired in yet")
    test = manifest.subset("test")
    network = model.build()
    logits = predict_logits(network, decoded_images(test, model.preprocess), model.preprocess)
    report = evaluate_probabilities(test.label_indices(model.class_names), softmax(logits), model.class_names)
    report = report.with_latency(measure_model_latency(network, model.preprocess))
    verdict = quality_gate(report, gate)
    logger.info(
        "test accuracy %.4f [%.4f, %.4f], macro F1 %.4f [%.4f, %.4f], ECE %.4f, latency p50 %.1f ms; quality gate %s: %s",
        report.accuracy, report.accuracy_ci_low, report.accuracy_ci_high, report.macro_f1, report.macro_f1_ci_low,
        report.macro_f1_ci_high, report.ece, report.latency_p50_ms, "PASSED" if verdict.passed else "FAILED", verdict.explain(),
    )
    metrics = report.metrics()
    mlflow.log_metrics(metrics)
    mlflow.log_dict({"class_names": report.class_names, "confusion": report.confusion}, "confusion_matrix.json")
    log_metadata(metadata={**metrics, "quality_gate_passed": verdict.passed})
    return report, verdict
