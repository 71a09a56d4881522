"""ONNX export with the PreprocessSpec and class names inside the file, and parity checks against
torch. INT8 quantisation is in `imgclf.export.quantize`; which recipe, and whether to serve one at all,
in `imgclf.export.int8_search`."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgclf.bundle import (
    META_ARCH,
    META_CLASS_NAMES,
    META_MULTI_LABEL,
    META_PREPROCESS,
    ONNX_INPUT,
    ONNX_OUTPUT,
    multi_label_record,
)
from imgclf.models.trained import TrainedModel
from imgclf.preprocess import PreprocessSpec


def export_onnx(trained: TrainedModel, opset: int = 17) -> bytes:
    """fp32 ONNX with a dynamic batch axis; metadata holds what a server needs to use the file alone
    (class names, PreprocessSpec, and a multi-label model's thresholds; the INT8 file copies them)."""
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
    meta = {
        META_ARCH: trained.arch,
        META_CLASS_NAMES: json.dumps(trained.class_names),
        META_PREPROCESS: trained.preprocess.to_json(),
    }
    if trained.thresholds is not None:  # a multi-label model: the service answers every label above its threshold
        meta[META_MULTI_LABEL] = json.dumps(multi_label_record(trained.class_names, trained.thresholds))
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def cpu_session(model: bytes | str | Path, spinning: bool = True):
    """An onnxruntime CPU session on all cores. `spinning=False` for sessions timed in turn in one
    process: a pool's threads spin after each run and would steal the cores from the next session,
    slowing whichever model is timed after it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(
        model if isinstance(model, bytes) else str(model), options, providers=["CPUExecutionProvider"]
    )


def onnx_logits(model, images: np.ndarray, spec: PreprocessSpec, batch_size: int = 64) -> np.ndarray:
    """Logits for uint8 images (N, H, W, 3); `model` is ONNX bytes, a path or an open session."""
    session = model if hasattr(model, "run") else cpu_session(model)
    outs = [
        session.run([ONNX_OUTPUT], {ONNX_INPUT: spec.normalize(images[i : i + batch_size])})[0]
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(outs)


@dataclass
class Parity:
    """How closely a candidate (an export) reproduces the reference (torch) on the same images."""

    max_abs_logit_diff: float
    top1_agreement: float


def parity(reference_logits: np.ndarray, candidate_logits: np.ndarray) -> Parity:
    """The candidate's largest logit difference from the reference and its top-1 agreement with it."""
    if not len(reference_logits):
        return Parity(max_abs_logit_diff=0.0, top1_agreement=1.0)
    return Parity(
        max_abs_logit_diff=float(np.abs(reference_logits - candidate_logits).max()),
        top1_agreement=float((reference_logits.argmax(1) == candidate_logits.argmax(1)).mean()),
    )
