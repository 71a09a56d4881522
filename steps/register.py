import json
import tempfile
from pathlib import Path
from typing import Annotated

from zenml import get_step_context, log_metadata, step
from zenml.logger import get_logger
from zenml.types import MarkdownString

from imgclf.bundle import ONNX_FILE, ONNX_INT8_FILE, TrainedModel, set_serving_model
from imgclf.evaluate.metrics import EvaluationReport
from imgclf.export.onnx import ExportedModel
from imgclf.registry import RegisteredVersion, describe_version, register_bundle

logger = get_logger(__name__)


@step(experiment_tracker=True)
def register(
    model: TrainedModel, exported: ExportedModel, evaluation: EvaluationReport, model_card: MarkdownString
) -> Annotated[RegisteredVersion, "registered_model"]:
    """Register the bundle in MLflow under the ZenML Model's name, link the two versions, and put the
    model card on the MLflow version (its description, and MODEL_CARD.md in the bundle)."""
    zenml_model = get_step_context().model
    with tempfile.TemporaryDirectory() as tmp:
        bundle = model.save(Path(tmp) / "bundle")
        (bundle / ONNX_FILE).write_bytes(exported.onnx)
        if exported.onnx_int8 is not None:  # only when an INT8 recipe won; the bundle then serves it
            (bundle / ONNX_INT8_FILE).write_bytes(exported.onnx_int8)
        set_serving_model(bundle, exported.serving_file)
        (bundle / "evaluation.json").write_text(json.dumps(evaluation.metrics(), indent=2))
        (bundle / "export_report.json").write_text(json.dumps(exported.report, indent=2))
        (bundle / "MODEL_CARD.md").write_text(str(model_card))
        registered = register_bundle(
            bundle,
            zenml_model.name,
            tags={"zenml_model_version": str(zenml_model.version), **{k: f"{v:.4f}" for k, v in evaluation.metrics().items()}},
        )
    describe_version(registered.name, registered.version, str(model_card))
    log_metadata(
        metadata={"mlflow_model_name": registered.name, "mlflow_model_version": registered.version, "model_uri": registered.model_uri},
        infer_model=True,
    )
    logger.info("registered %s (ZenML model version %s)", registered.model_uri, zenml_model.version)
    return registered
