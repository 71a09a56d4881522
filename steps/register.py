import tempfile
from pathlib import Path
from typing import Annotated

from zenml import get_step_context, log_metadata, step
from zenml.logger import get_logger
from zenml.types import MarkdownString

from imgclf import provenance
from imgclf.bundle import write_release
from imgclf.data.manifest import DatasetManifest
from imgclf.drift.reference import write_reference_profile
from imgclf.evaluate.gate import GateResult
from imgclf.evaluate.metrics import EvaluationReport
from imgclf.export.exporter import ExportedModel
from imgclf.models.trained import TrainedModel
from imgclf.registry import RegisteredVersion, describe_version, register_bundle
from imgclf.stages import COMMIT_TAG, DATA_HASH_TAG, DATA_VERSION_TAG, GATE_PASSED_TAG, GATE_TAG, ZENML_VERSION_TAG

logger = get_logger(__name__)


@step(experiment_tracker=True)
def register(
    model: TrainedModel,
    exported: ExportedModel,
    evaluation: EvaluationReport,
    gate: GateResult,
    model_card: MarkdownString,
    manifest: DatasetManifest,
) -> Annotated[RegisteredVersion, "registered_model"]:
    """Register the release folder in MLflow under the ZenML Model's name, link the two versions, put the
    model card on the MLflow version (its description, and MODEL_CARD.md in the bundle), and tag what the
    promotion rules and the audit trail read: the gate's verdict, the data version and the commit."""
    zenml_model = get_step_context().model
    metrics = evaluation.metrics()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = write_release(
            Path(tmp) / "bundle",
            model,
            exported.onnx,
            exported.onnx_int8,
            metrics=metrics,
            export_report=exported.report.to_dict(),
            model_card=str(model_card),
        )
        test = manifest.subset("test").records  # drift is measured against the model on these images
        write_reference_profile(bundle, [Path(manifest.root) / p for p in test["path"]])
        tags = {
            ZENML_VERSION_TAG: str(zenml_model.version),
            **{k: f"{v:.4f}" for k, v in metrics.items()},
            GATE_PASSED_TAG: str(gate.passed).lower(),
            GATE_TAG: gate.explain(),
            DATA_HASH_TAG: str(model.info.get("data_hash", "")),
            DATA_VERSION_TAG: provenance.dvc_data_version(manifest.root),
            COMMIT_TAG: provenance.git_commit(),
        }
        registered = register_bundle(bundle, zenml_model.name, tags=tags)
    describe_version(registered.name, registered.version, str(model_card))
    log_metadata(
        metadata={
            "mlflow_model_name": registered.name,
            "mlflow_model_version": registered.version,
            "model_uri": registered.model_uri,
        },
        infer_model=True,
    )
    logger.info("registered %s (ZenML model version %s)", registered.model_uri, zenml_model.version)
    return registered
