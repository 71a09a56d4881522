"""ONNX export with the PreprocessSpec and class names inside the file, and parity checks against
torch. A model with an embedding projection gets a second output, `embedding` (float32 (N, D)) after
the logits: the service logs it for drift monitoring without torch. INT8 quantisation is in
`imgclf.export.quantize`; which recipe, and whether to serve one at all, in `imgclf.export.int8_search`."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgclf.bundle import (
    META_ARCH,
    META_CLASS_NAMES,
    META_EMBEDDING,
    META_MULTI_LABEL,
    META_PREPROCESS,
    ONNX_EMBEDDING,
    ONNX_INPUT,
    ONNX_OUTPUT,
    multi_label_record,
)
from imgclf.models.features import WithEmbedding
from imgclf.models.trained import TrainedModel
from imgclf.preprocess import PreprocessSpec


def export_onnx(trained: TrainedModel, opset: int = 17) -> bytes:
    """fp32 ONNX with a dynamic batch axis; metadata holds what a server needs to use the file alone
    (class names, PreprocessSpec, and a multi-label model's thresholds; the INT8 file copies them).
    Outputs: `logits`, then `embedding` when the model has a projection (older bundles: logits only)."""
    import onnx
    import torch

    model = trained.build()
    outputs = [ONNX_OUTPUT]
    if trained.projection is not None:
        model = WithEmbedding(model, trained.projection.mean, trained.projection.components).eval()
        outputs.append(ONNX_EMBEDDING)
    size = trained.preprocess.image_size
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        torch.zeros(1, 3, size, size),
        buffer,
        dynamo=False,
        input_names=[ONNX_INPUT],
        output_names=outputs,
        dynamic_axes={name: {0: "batch"} for name in (ONNX_INPUT, *outputs)},
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
    if trained.projection is not None:  # what the second output is and how its projection was fitted
        meta[META_EMBEDDING] = json.dumps(trained.projection.record())
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
    return onnx_outputs(model, images, spec, [ONNX_OUTPUT], batch_size)[0]


def onnx_outputs(
    model, images: np.ndarray, spec: PreprocessSpec, names: list[str], batch_size: int = 64
) -> list[np.ndarray]:
    """The named outputs (e.g. logits and embedding) for uint8 images, each concatenated over batches."""
    session = model if hasattr(model, "run") else cpu_session(model)
    outs = [
        session.run(names, {ONNX_INPUT: spec.normalize(images[i : i + batch_size])})
        for i in range(0, len(images), batch_size)
    ]
    if not outs:
        return [np.zeros((0, 0), dtype=np.float32) for _ in names]
    return [np.concatenate(parts) for parts in zip(*outs)]


def has_embedding(model) -> bool:
    """Whether an ONNX model (bytes, path or open session) has the `embedding` output."""
    session = model if hasattr(model, "run") else cpu_session(model)
    return ONNX_EMBEDDING in [output.name for output in session.get_outputs()]


@dataclass
class Parity:
    """How closely a candidate (an export) reproduces the reference (torch) on the same images."""

    max_abs_logit_diff: float
    top1_agreement: float
    max_abs_embedding_diff: float | None = None  # None: no embedding output to compare


def parity(
    reference_logits: np.ndarray,
    candidate_logits: np.ndarray,
    reference_embedding: np.ndarray | None = None,
    candidate_embedding: np.ndarray | None = None,
) -> Parity:
    """The candidate's largest logit difference from the reference and its top-1 agreement with it,
    and with both embeddings given, their largest difference."""
    embedding = None
    if reference_embedding is not None and candidate_embedding is not None:
        if reference_embedding.shape != candidate_embedding.shape:
            raise ValueError(
                f"embedding shapes differ: reference {reference_embedding.shape}, candidate {candidate_embedding.shape}"
            )
        embedding = float(np.abs(reference_embedding - candidate_embedding).max()) if len(reference_embedding) else 0.0
    if not len(reference_logits):
        return Parity(max_abs_logit_diff=0.0, top1_agreement=1.0, max_abs_embedding_diff=embedding)
    return Parity(
        max_abs_logit_diff=float(np.abs(reference_logits - candidate_logits).max()),
        top1_agreement=float((reference_logits.argmax(1) == candidate_logits.argmax(1)).mean()),
        max_abs_embedding_diff=embedding,
    )
