from typing import Annotated

from zenml import log_metadata, step
from zenml.logger import get_logger

from imgclf.bundle import TrainedModel
from imgclf.data.cache import decoded_images
from imgclf.data.manifest import DatasetManifest
from imgclf.export.onnx import ExportedModel, export_onnx, onnx_logits, parity, quantize_int8
from imgclf.train.loop import predict_logits

logger = get_logger(__name__)


@step
def quantize(
    model: TrainedModel, manifest: DatasetManifest, max_abs_logit_diff: float = 1e-3
) -> Annotated[ExportedModel, "onnx_model"]:
    """ONNX fp32 + static INT8 calibrated on val images; both checked against torch on the test split."""
    spec = model.preprocess
    test = manifest.subset("test")
    test_images = decoded_images(test, spec)
    labels = test.label_indices(model.class_names)
    fp32 = export_onnx(model)
    int8 = quantize_int8(fp32, decoded_images(manifest.subset("val"), spec), spec)
    reference = predict_logits(model.build(), test_images, spec)
    fp32_logits, int8_logits = onnx_logits(fp32, test_images, spec), onnx_logits(int8, test_images, spec)
    fp32_parity, int8_parity = parity(reference, fp32_logits), parity(reference, int8_logits)
    report = {
        "onnx_max_abs_logit_diff": fp32_parity["max_abs_logit_diff"],
        "onnx_top1_agreement": fp32_parity["top1_agreement"],
        "int8_top1_agreement": int8_parity["top1_agreement"],
        "torch_test_accuracy": float((reference.argmax(1) == labels).mean()),
        "int8_test_accuracy": float((int8_logits.argmax(1) == labels).mean()),
        "test_images": len(test_images),
    }
    if report["onnx_max_abs_logit_diff"] > max_abs_logit_diff or report["onnx_top1_agreement"] < 1.0:
        raise RuntimeError(f"ONNX export disagrees with torch on the test split: {report}")
    logger.info("ONNX parity %s", report)
    if report["int8_top1_agreement"] < 0.99:
        logger.warning("INT8 agrees with torch on only %.1f%% of test images; the service keeps using fp32 ONNX",
                       100 * report["int8_top1_agreement"])
    log_metadata(metadata=report)
    return ExportedModel(onnx=fp32, onnx_int8=int8, report=report)
