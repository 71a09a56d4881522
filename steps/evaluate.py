import tempfile
from pathlib import Path
from typing import Annotated, Tuple

import mlflow
from zenml import get_step_context, log_metadata, step
from zenml.client import Client
from zenml.logger import get_logger
from zenml.types import HTMLString, MarkdownString

from imgclf.bundle import TrainedModel
from imgclf.data.manifest import DatasetManifest
from imgclf.evaluate.evaluation import Champion, EvaluationConfig, evaluate_model
from imgclf.evaluate.metrics import EvaluationReport, GateConfig, GateResult
from imgclf.evaluate.model_card import ModelCardConfig, model_card
from imgclf.evaluate.report import headline_rows, render_html
from imgclf.registry import alias_version, fetch_bundle

logger = get_logger(__name__)


@step(experiment_tracker=True)
def evaluate(
    model: TrainedModel,
    manifest: DatasetManifest,
    gate: GateConfig = GateConfig(),
    config: EvaluationConfig = EvaluationConfig(),
    card: ModelCardConfig = ModelCardConfig(),
    production_alias: str = "production",
) -> Tuple[
    Annotated[EvaluationReport, "evaluation"],
    Annotated[GateResult, "quality_gate"],
    Annotated[HTMLString, "evaluation_report"],
    Annotated[MarkdownString, "model_card"],
]:
    """Score the model on the held-out test split against the production model (if any), decide the
    quality gate that deploy obeys, and write the HTML report and the model card."""
    zenml_model = get_step_context().model
    champion, unavailable = _production_model(zenml_model.name, production_alias)
    result = evaluate_model(model, manifest, gate, config, champion)
    if unavailable:
        result.report.comparison_note = unavailable
    report, verdict = result.report, result.gate
    logger.info("test %s", "; ".join(f"{name} {value}" for name, value in headline_rows(report)))
    logger.info("%s", report.comparison_note)
    (logger.info if verdict.passed else logger.warning)("quality gate %s: %s", "PASSED" if verdict.passed else "FAILED", verdict.explain())
    title = f"{zenml_model.name} version {zenml_model.version}: evaluation on {report.n_images} test images"
    facts = {"architecture": model.arch, "classes": len(model.class_names), "data hash": model.info.get("data_hash", ""),
             "image size": model.preprocess.image_size}
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
    log_metadata(metadata={**metrics, "quality_gate_passed": verdict.passed, "comparison": report.comparison_note})
    return report, verdict, HTMLString(html), MarkdownString(card_md)


def _production_model(name: str, alias: str) -> tuple[Champion | None, str]:
    """The registry's `alias` version of `name`, loaded; or None and why it could not be (a broken
    production entry must not stop a new model from being evaluated)."""
    tracking_uri = Client().active_stack.experiment_tracker.get_tracking_uri()
    version = alias_version(name, alias, tracking_uri)
    if version is None:
        return None, ""
    uri = f"models:/{name}/{version}"
    try:
        with tempfile.TemporaryDirectory(prefix="imgclf-production-") as tmp:
            bundle, _ = fetch_bundle(uri, tmp, tracking_uri)
            return Champion(model=TrainedModel.load(bundle), label=f"{uri} (@{alias})"), ""
    except Exception as exc:  # noqa: BLE001 - reported in the report and the log instead
        logger.warning("could not load the production model %s: %s", uri, exc)
        return None, f"production model {uri} (@{alias}) could not be loaded, so no comparison: {type(exc).__name__}: {exc}"
