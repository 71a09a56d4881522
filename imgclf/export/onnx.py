"""ONNX export with the PreprocessSpec and class names inside the file, and parity checks against
torch. INT8 quantisation (which recipe, and whether to serve it at all) is in `imgclf.export.quantize`."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgclf.bundle import META_ARCH, META_CLASS_NAMES, META_PREPROCESS, ONNX_FILE, ONNX_INPUT, ONNX_INT8_FILE, ONNX_OUTPUT
from imgclf.models.trained import TrainedModel
from imgclf.preprocess import PreprocessSpec


@dataclass
class ExportedModel:
    onnx: bytes
    onnx_int8: bytes | None  # the chosen INT8 recipe's model; None when no recipe beat fp32
    report: dict[str, Any] = field(default_factory=dict)  # parity, the INT8 recipe table and the choice

    @property
    def serving_file(self) -> str:
        """The file the service loads: INT8 only when a recipe was chosen (faster and accurate enough)."""
        return ONNX_FILE if self.onnx_int8 is None else ONNX_INT8_FILE


def export_onnx(trained: TrainedModel, opset: int = 17) -> bytes:
    """fp32 ONNX with a dynamic batch axis; metadata holds what a server needs to use the file alone."""
    import onnx
    import torch

    model = trained.build()
    size = trained.preprocess.image_size
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        torch.zeros(1, 3, size, size),
        buffer,
        dynamo=False,
        input_names=[ONNX_INPUT],
        output_names=[ONNX_OUTPUT],
        dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
        opset_version=opset,
    )
    proto = onnx.load_from_string(buffer.getvalue())
    _set_metadata(proto, trained)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _set_metadata(proto, trained: TrainedModel) -> None:
    meta = {META_ARCH: trained.arch, META_CLASS_NAMES: json.dumps(trained.class_names), META_PREPROCESS: trained.preprocess.to_json()}
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def cpu_session(model: bytes | str | Path, spinning: bool = True):
    """An onnxruntime CPU session on all cores. `spinning=False` for sessions timed in turn in one
    process: a pool's threads spin after each run and would steal the cores from the next session
    (measured here, resnet10t at 32 px: fp32 at batch 32 fell from 2300 to 1300 images/s when timed in turn
    with a spinning INT8 session)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=["CPUExecutionProvider"])


def onnx_logits(model, images: np.ndarray, spec: PreprocessSpec, batch_size: int = 64) -> np.ndarray:
    """Logits for uint8 images (N, H, W, 3); `model` is ONNX bytes, a path or an open session."""
    session = model if hasattr(model, "run") else cpu_session(model)
    outs = [session.run([ONNX_OUTPUT], {ONNX_INPUT: spec.normalize(images[i : i + batch_size])})[0] for i in range(0, len(images), batch_size)]
    return np.concatenate(outs)


def parity(reference_logits: np.ndarray, candidate_logits: np.ndarray) -> dict[str, float]:
    """How closely a candidate (ONNX fp32 / INT8) reproduces the reference (torch) on the same images."""
    return {
        "max_abs_logit_diff": float(np.abs(reference_logits - candidate_logits).max()) if len(reference_logits) else 0.0,
        "top1_agreement": float((reference_logits.argmax(1) == candidate_logits.argmax(1)).mean()) if len(reference_logits) else 1.0,
    }
