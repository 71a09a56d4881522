import tempfile
from pathlib import Path
from typing import Annotated

import mlflow
from zenml import get_step_context, log_metadata, step
from zenml.client import Client
from zenml.logger import get_logger
from zenml.types import HTMLString, MarkdownString

from imgclf.data.manifest import DatasetManifest
from imgclf.evaluate.champion import CHAMPION_ALIASES, load_champion
from imgclf.evaluate.evaluation import EvaluationConfig, evaluate_model
from imgclf.evaluate.gate import GateConfig, GateResult
from imgclf.evaluate.metrics import EvaluationReport
from imgclf.evaluate.model_card import ModelCardConfig, model_card
from imgclf.evaluate.report import render_html
from imgclf.evaluate.summary import headline_rows
from imgclf.models.trained import TrainedModel
from imgclf.registry import TEST_SPLIT_ARTIFACT

logger = get_logger(__name__)


@step(experiment_tracker=True)
def evaluate(
    model: TrainedModel,
    manifest: DatasetManifest,
    gate: GateConfig = GateConfig(),
    config: EvaluationConfig = EvaluationConfig(),
    card: ModelCardConfig = ModelCardConfig(),
    champion_aliases: tuple[str, ...] = CHAMPION_ALIASES,
) -> tuple[
    Annotated[EvaluationReport, "evaluation"],
    Annotated[GateResult, "quality_gate"],
    Annotated[HTMLString, "evaluation_report"],
    Annotated[MarkdownString, "model_card"],
]:
    """Score the model on the held-out test split against the champion (the first of `champion_aliases`
    with a holder), decide the quality gate, write the HTML report and the model card, and log the test
    split with the run so that later promotions score on the same images."""
    zenml_model = get_step_context().model
    tracking_uri = Client().active_stack.experiment_tracker.get_tracking_uri()
    champion, unavailable = load_champion(zenml_model.name, champion_aliases, tracking_uri)
    result = evaluate_model(model, manifest, gate, config, champion, unavailable)
    report, verdict = result.report, result.gate
    logger.info("test %s", "; ".join(f"{name} {value}" for name, value in headline_rows(report)))
    logger.info("%s", report.comparison_note)
    (logger.info if verdict.passed else logger.warning)(
        "quality gate %s: %s", "PASSED" if verdict.passed else "FAILED", verdict.explain()
    )
    title = f"{zenml_model.name} version {zenml_model.version}: evaluation on {report.n_images} test images"
    facts = {
        "architecture": model.arch,
        "classes": len(model.class_names),
        "data hash": model.info.get("data_hash", ""),
        "image size": model.preprocess.image_size,
    }
    html = render_html(report, verdict, result.figures, title, facts)
    card_md = model_card(model, manifest, report, verdict, card, zenml_model.name, str(zenml_model.version))
    metrics = report.metrics()
    mlflow.log_metrics(metrics)
    mlflow.log_dict({"class_names": report.class_names, "confusion": report.confusion}, "confusion_matrix.json")
    mlflow.log_text(html, "evaluation/report.html")
    mlflow.log_text(card_md, "model_card.md")
    with tempfile.TemporaryDirectory() as tmp:
        for name, png in result.figure_files().items():
            Path(tmp, name).write_bytes(png)
        mlflow.log_artifacts(tmp, "evaluation/figures")
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifacts(str(manifest.subset("test").write(tmp)), TEST_SPLIT_ARTIFACT)
    log_metadata(metadata={**metrics, "quality_gate_passed": verdict.passed, "comparison": report.comparison_note})
    return report, verdict, HTMLString(html), MarkdownString(card_md)
