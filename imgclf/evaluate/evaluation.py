"""The whole evaluation of a trained model on the held-out test split, in one call: metrics with CIs,
latency, subgroups, the comparison with the champion (the version it would replace), the quality gate,
the figures and the HTML report. The evaluate step and the tests call this; the step only logs what it returns."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import f1_score

from imgclf.data.decoded import DecodedSplits
from imgclf.data.manifest import DatasetManifest
from imgclf.evaluate import plots
from imgclf.evaluate.champion import Champion, compare_with_champion
from imgclf.evaluate.gate import GateConfig, GateResult, quality_gate
from imgclf.evaluate.metrics import EvaluationReport, evaluate_probabilities
from imgclf.evaluate.multilabel import evaluate_multilabel
from imgclf.evaluate.stats import bootstrap_ci
from imgclf.evaluate.subgroups import SubgroupReport, subgroup_metrics
from imgclf.inference import predict_logits
from imgclf.latency import measure_model_latency
from imgclf.models.thresholds import tune_thresholds
from imgclf.models.trained import TrainedModel
from imgclf.scores import sigmoid, softmax


class EvaluationConfig(BaseModel):
    """How much of the report to draw, and the statistics' settings."""

    model_config = ConfigDict(extra="forbid")

    n_bootstrap: int = Field(1000, ge=1)
    seed: int = 0
    misclassified_images: int = Field(16, ge=0)
    gradcam_images: int = Field(6, ge=0)  # per grid: misclassified, and correct
    subgroup_min_images: int = Field(5, ge=1)  # a smaller subgroup is listed but not called the worst
    measure_latency: bool = True


@dataclass
class Evaluation:
    report: EvaluationReport
    gate: GateResult
    figures: dict[str, bytes]  # figure title -> PNG

    def figure_files(self) -> dict[str, bytes]:
        """The figures under file names that keep the report's order: `00-per-class_accuracy.png`, ..."""
        return {
            f"{i:02d}-{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}.png": png
            for i, (name, png) in enumerate(self.figures.items())
        }


def evaluate_model(
    trained: TrainedModel,
    manifest: DatasetManifest,
    gate: GateConfig = GateConfig(),
    config: EvaluationConfig = EvaluationConfig(),
    champion: Champion | None = None,
    champion_note: str = "",
) -> Evaluation:
    """Score `trained` on the manifest's test split (val only to tune the thresholds of a multi-label
    model that does not carry its own).
    `champion_note` says why there is no champion when the registry could not provide one."""
    data = DecodedSplits(manifest, trained.preprocess, trained.class_names)
    data.require("test")
    network = trained.build()
    logits = predict_logits(network, data.test.images, trained.preprocess)
    if data.multi_label:
        report, figures = _multilabel_evaluation(trained, network, data, logits, config), {}
    else:
        probs = softmax(logits)
        report, figures = _single_label_evaluation(trained, network, data, probs, config)
        report.comparison, report.comparison_note = compare_with_champion(
            champion, champion_note, manifest, data.test.targets, probs, trained, config.n_bootstrap, config.seed
        )
        if champion is not None:  # compared or not (other classes): the version the candidate would replace
            report.champion_version, report.champion_alias = champion.version, champion.alias
    if config.measure_latency:
        report = report.with_latency(measure_model_latency(network, trained.preprocess))
    return Evaluation(report=report, gate=quality_gate(report, gate), figures=figures)


def _single_label_evaluation(
    trained: TrainedModel, network, data: DecodedSplits, probs: np.ndarray, config: EvaluationConfig
) -> tuple[EvaluationReport, dict[str, bytes]]:
    """The metrics, the figures and the subgroups of a single-label model (softmax outputs `probs`)."""
    test = data.test
    report = evaluate_probabilities(
        test.targets, probs, trained.class_names, n_bootstrap=config.n_bootstrap, seed=config.seed
    )
    figures = _figures(network, trained, test.images, test.targets, probs, report, config)
    extra = test.manifest.extra_columns
    if extra:
        report.subgroups = subgroup_metrics(
            test.manifest.records[extra],
            test.targets,
            probs.argmax(1),
            len(trained.class_names),
            min_images=config.subgroup_min_images,
            n_bootstrap=config.n_bootstrap,
            seed=config.seed,
        )
    return report, figures


def _multilabel_evaluation(
    trained: TrainedModel, network, data: DecodedSplits, logits: np.ndarray, config: EvaluationConfig
) -> EvaluationReport:
    """The multi-label report; subgroups and the champion comparison are single-label only, and say so."""
    report = _multilabel_report(trained, network, data, logits, config)
    report.comparison_note = "not compared with a champion: the comparison is single-label only"
    extra = data.test.manifest.extra_columns
    if extra:
        report.subgroups = SubgroupReport(skipped=dict.fromkeys(extra, "subgroup metrics are single-label only"))
    return report


def _figures(network, trained, images, y_true, probs, report, config) -> dict[str, bytes]:
    """Every picture of the report; a figure that cannot be drawn says why instead."""
    from imgclf.evaluate.gradcam import GradCamUnsupported, grad_cam

    y_pred, confidence = probs.argmax(1), probs.max(1)
    names = trained.class_names
    images = np.asarray(images)
    rel = report.reliability
    figures = {
        "Per-class accuracy": plots.per_class_accuracy_chart(report.per_class_accuracy),
        "Most-confused class pairs": plots.confused_pairs_chart(report.confusion, names),
        "Most confident mistakes": plots.misclassified_grid(
            images, y_true, y_pred, confidence, names, config.misclassified_images
        ),
        "Reliability diagram": plots.reliability_diagram(
            rel["confidence"], rel["accuracy"], rel["counts"], report.ece, rel["bin_edges"]
        ),
    }
    wrong = plots.top_misclassified(y_true, y_pred, confidence, config.gradcam_images)
    right = np.flatnonzero(y_true == y_pred)
    right = right[np.argsort(-confidence[right], kind="stable")][: config.gradcam_images]
    for heading, chosen in (("Grad-CAM: misclassified", wrong), ("Grad-CAM: correct", right)):
        titles = [f"{names[y_true[i]]} \u2192 {names[y_pred[i]]} ({confidence[i]:.2f})" for i in chosen]
        try:
            heatmaps = grad_cam(network, images[chosen], trained.preprocess)
            figures[heading] = plots.gradcam_grid(images[chosen], heatmaps, titles, heading=heading)
        except GradCamUnsupported as exc:
            figures[heading] = plots.message_png(f"Grad-CAM is not available for this model: {exc}", heading)
    return figures


def _multilabel_macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def _thresholds(trained: TrainedModel, network, data: DecodedSplits) -> tuple[np.ndarray | None, str]:
    """The thresholds the model decides with, and what they were tuned on: those stored with it at
    training (tuned on its val split), else tuned here on val (a model trained before they were
    stored), else 0.5 for every label."""
    if trained.thresholds is not None:
        return np.asarray(trained.thresholds), "the validation split (at training, stored with the model)"
    if len(data.val):
        val_scores = sigmoid(predict_logits(network, data.val.images, trained.preprocess))
        return tune_thresholds(data.val.targets, val_scores), "the validation split"
    return None, "nothing (no validation rows; 0.5 used)"


def _multilabel_report(trained, network, data: DecodedSplits, test_logits, config) -> EvaluationReport:
    """Exact-match accuracy and macro F1 (thresholds tuned per label on val), both with bootstrap
    CIs, plus the per-label AP / mAP report."""
    names = trained.class_names
    thresholds, tuned_on = _thresholds(trained, network, data)
    y = data.test.targets
    scores = sigmoid(test_logits)
    ml = evaluate_multilabel(y, scores, names, thresholds)
    pred = (scores >= np.array([ml.thresholds[n] for n in names])[None, :]).astype(np.int64)
    exact = (pred == y).all(axis=1).astype(np.int64)
    acc = bootstrap_ci("accuracy", np.ones_like(exact), exact, n=config.n_bootstrap, seed=config.seed, n_classes=2)
    f1 = bootstrap_ci(_multilabel_macro_f1, y, pred, n=config.n_bootstrap, seed=config.seed)
    notes = [
        *ml.notes,
        f"multi-label: accuracy is exact-match (every label right); macro F1 at thresholds tuned on {tuned_on}",
    ]
    return EvaluationReport(
        class_names=list(names),
        n_images=len(y),
        accuracy=acc["estimate"],
        macro_f1=ml.macro_f1,
        confusion=[],
        accuracy_ci_low=acc["ci_low"],
        accuracy_ci_high=acc["ci_high"],
        macro_f1_ci_low=f1["ci_low"],
        macro_f1_ci_high=f1["ci_high"],
        n_bootstrap=config.n_bootstrap,
        bootstrap_seed=config.seed,
        notes=notes,
        multi_label=ml,
    )
