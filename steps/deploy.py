from typing import Annotated

from zenml import log_metadata, step
from zenml.client import Client
from zenml.logger import get_logger

from imgclf import paths
from imgclf.evaluate.gate import GateResult
from imgclf.registry import RegisteredVersion, fetch_bundle
from imgclf.serving.deployment import DeployConfig, Deployment, start

logger = get_logger(__name__)


@step
def deploy(
    registered: RegisteredVersion, gate: GateResult, config: DeployConfig = DeployConfig()
) -> Annotated[Deployment, "deployment"]:
    """Serve the registered version with BentoML on `config.host` when the quality gate passed."""
    if not gate.passed:
        reason = f"quality gate failed: {gate.explain()}"
        logger.warning("NOT deploying %s: %s", registered.model_uri, reason)
        log_metadata(metadata={"deployed": False, "reason": reason})
        return Deployment(
            status="skipped", reason=reason, model_uri=registered.model_uri, model_version=registered.version
        )
    tracking_uri = Client().active_stack.experiment_tracker.get_tracking_uri()
    bundle, version = fetch_bundle(
        registered.model_uri, paths.deployments_dir() / f"{registered.name}-v{registered.version}", tracking_uri
    )
    deployment = start(bundle, registered.model_uri, version, config)
    logger.info(
        "deployed %s at %s (pid %d, log %s); stop it with: kill %d",
        registered.model_uri,
        deployment.url,
        deployment.pid,
        deployment.log_file,
        deployment.pid,
    )
    log_metadata(metadata={"deployed": True, "url": deployment.url, "pid": deployment.pid, "model_version": version})
    return deployment
