from typing import Annotated

from zenml import log_metadata, step
from zenml.client import Client
from zenml.logger import get_logger

from imgclf.promotion.record import PromotionRecord
from imgclf.serving.deployment import DeployConfig, Deployment, deploy_version

logger = get_logger(__name__)


@step
def deploy(record: PromotionRecord, config: DeployConfig = DeployConfig()) -> Annotated[Deployment, "deployment"]:
    """Serve the stage's new holder with BentoML on `config.host` when the promotion moved the stage (a
    service already running for that stage keeps its version otherwise)."""
    uri = f"models:/{record.model_name}/{record.candidate_version}"
    if not record.moved:
        reason = f"{record.stage} did not change: {record.reason}"
        logger.warning("NOT deploying %s: %s", uri, reason)
        log_metadata(metadata={"deployed": False, "reason": reason})
        return Deployment(status="skipped", reason=reason, model_uri=uri, model_version=record.candidate_version)
    tracking_uri = Client().active_stack.experiment_tracker.get_tracking_uri()
    deployment = deploy_version(record.model_name, record.candidate_version, record.stage, config, tracking_uri)
    logger.info(
        "deployed %s (@%s) at %s (pid %d, log %s); stop it with: kill %d",
        uri,
        record.stage,
        deployment.url,
        deployment.pid,
        deployment.log_file,
        deployment.pid,
    )
    log_metadata(
        metadata={
            "deployed": True,
            "url": deployment.url,
            "pid": deployment.pid,
            "model_version": deployment.model_version,
        }
    )
    return deployment
