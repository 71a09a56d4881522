from typing import Annotated

from zenml import log_metadata, step
from zenml.logger import get_logger

from imgclf.data.decoded import DecodedSplits
from imgclf.data.manifest import DatasetManifest
from imgclf.export.exporter import ExportConfig, ExportedModel, ExportImages, export_checked
from imgclf.models.trained import TrainedModel

logger = get_logger(__name__)


@step
def quantize(
    model: TrainedModel, manifest: DatasetManifest, config: ExportConfig = ExportConfig()
) -> Annotated[ExportedModel, "onnx_model"]:
    """ONNX fp32 (fails if it disagrees with torch) and the INT8 recipe search: calibrated on a sample
    of train images, chosen on val (the test split stays untouched by the choice), timed against fp32
    here; INT8 ships only if a recipe won."""
    data = DecodedSplits(manifest, model.preprocess, model.class_names)
    exported, search = export_checked(model, ExportImages.from_splits(data), config)
    report = exported.report
    int8 = (
        f"; INT8 top-1 agreement {report.test_int8_top1_agreement:.4f}, "
        f"accuracy drop {report.test_int8_accuracy_drop:+.4f}"
        if exported.onnx_int8 is not None
        else ""
    )
    logger.info(
        "%s. On the test split: ONNX max |logit diff| %.2e, top-1 agreement %.4f%s",
        search.summary(),
        report.test_onnx_max_abs_logit_diff,
        report.test_onnx_top1_agreement,
        int8,
    )
    if exported.onnx_int8 is not None and report.test_int8_top1_agreement < config.min_agreement:
        logger.warning(
            "the chosen INT8 recipe agrees with torch on only %.1f%% of the test split (it met %.0f%% on val)",
            100 * report.test_int8_top1_agreement,
            100 * config.min_agreement,
        )
    log_metadata(metadata=report.scalars())
    return exported
