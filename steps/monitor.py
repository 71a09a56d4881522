from typing import Annotated

import pandas as pd
from zenml import log_metadata, step
from zenml.client import Client
from zenml.logger import get_logger
from zenml.types import HTMLString

from imgclf.drift.detect import DriftDecision, detect_drift
from imgclf.drift.figures import traffic_page
from imgclf.drift.monitor import MonitoringConfig, load_reference, load_window, served_version

logger = get_logger(__name__)


def _tracking_uri() -> str | None:
    tracker = Client().active_stack.experiment_tracker
    return tracker.get_tracking_uri() if tracker is not None else None


@step
def watch_traffic(
    config: MonitoringConfig = MonitoringConfig(),
) -> tuple[
    Annotated[pd.DataFrame, "traffic_window"],
    Annotated[pd.DataFrame, "reference_profile"],
    Annotated[str, "served_version"],
]:
    """The served version's window of the prediction log and the reference profile registered with it."""
    version = served_version(config, _tracking_uri())
    window = load_window(config, version)
    reference = load_reference(config, version, _tracking_uri())
    logger.info("version %s: %d rows of traffic, %d reference rows", version, len(window), len(reference))
    return window, reference, version


@step(experiment_tracker=True)
def judge_drift(
    window: pd.DataFrame, reference: pd.DataFrame, version: str, config: MonitoringConfig = MonitoringConfig()
) -> tuple[
    Annotated[DriftDecision, "drift_decision"],
    Annotated[HTMLString, "drift_report"],
    Annotated[HTMLString, "traffic_report"],
]:
    """The drift decision (typed; also ZenML metadata), Evidently's report and the traffic figures, both as
    HTML in the dashboard and in the MLflow run."""
    import mlflow

    decision, snapshot = detect_drift(window, reference, config.drift)
    (logger.warning if decision.drifted else logger.info)("%s", decision.summary())
    report = snapshot.get_html_str(as_iframe=False) if snapshot is not None else f"<p>{decision.summary()}</p>"
    traffic = traffic_page(window, decision, version)
    log_metadata(
        metadata={
            "drift_detected": decision.drifted,
            "drifted_signals": decision.drifted_signals,
            "window_rows": decision.window_rows,
            "enough_data": decision.enough_data,
            "served_version": version,
        }
    )
    mlflow.log_text(report, "drift_report.html")
    mlflow.log_text(traffic, "traffic_report.html")
    mlflow.log_metrics({f"drift_score_{s.signal}": s.score for s in decision.signals})
    return decision, HTMLString(report), HTMLString(traffic)
