from typing import Annotated

from zenml import log_metadata, step
from zenml.logger import get_logger

from imgclf.bundle import TrainedModel
from imgclf.data.cache import decoded_images
from imgclf.data.manifest import DatasetManifest
from imgclf.export.exporter import ExportConfig, calibration_sample, export_checked
from imgclf.export.onnx import ExportedModel

logger = get_logger(__name__)


@step
def quantize(
    model: TrainedModel, manifest: DatasetManifest, config: ExportConfig = ExportConfig()
) -> Annotated[ExportedModel, "onnx_model"]:
    """ONNX fp32 (fails if it disagrees with torch) and the INT8 recipe search: calibrated on a sample
    of train images, chosen on val (the test split stays untouched by the choice), timed against fp32
    here; INT8 ships only if a recipe won."""
    spec = model.preprocess
    val, test, names = manifest.subset("val"), manifest.subset("test"), model.class_names
    exported, search = export_checked(
        model, calibration_sample(decoded_images(manifest.subset("train"), spec)), decoded_images(val, spec), val.targets(names, manifest.multi_label), config,
        test_images=decoded_images(test, spec), test_labels=test.targets(names, manifest.multi_label),
    )
    if exported.onnx_int8 is not None and exported.report["test_int8_top1_agreement"] < 0.99:
        logger.warning("the chosen INT8 recipe agrees with torch on only %.1f%% of the test split",
                       100 * exported.report["test_int8_top1_agreement"])
    logger.info("ONNX parity: max |logit diff| %.2e, top-1 agreement %.4f; %s",
                exported.report["onnx_max_abs_logit_diff"], exported.report["onnx_top1_agreement"], search.summary())
    log_metadata(metadata={k: v for k, v in exported.report.items() if isinstance(v, (int, float, str))})
    return exported
