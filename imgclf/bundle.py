"""The model bundle on disk: the folder a registered version ships and the service loads.

A bundle holds the weights (`model.safetensors`) and the spec (`model.json`: architecture, classes,
PreprocessSpec, training record, pruned structure, a multi-label model's thresholds, the embedding
projection's record, which ONNX file to serve), the embedding projection (`projection.safetensors`),
the ONNX exports and, for a release, the evaluation metrics, the export report and the model card.
Plain files only, never pickle. This module knows the file names and the JSON; it imports neither
torch nor ZenML, so the service can read a bundle without them (`imgclf.models.trained.TrainedModel`
loads the weights).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from imgclf.preprocess import PreprocessSpec

WEIGHTS_FILE = "model.safetensors"
PROJECTION_FILE = "projection.safetensors"  # the embedding's PCA (mean, components), when the model has one
SPEC_FILE = "model.json"
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
MODEL_CARD_FILE = "MODEL_CARD.md"
EVALUATION_FILE = "evaluation.json"
EXPORT_REPORT_FILE = "export_report.json"
REFERENCE_PROFILE_FILE = "reference_profile.parquet"  # what drift is measured against (imgclf.drift.reference)

# the ONNX file's contract: one input, the logits output, and what a server needs in its metadata; a
# model trained with an embedding projection has a second output (float32 (N, D)) after the logits
ONNX_INPUT, ONNX_OUTPUT = "input", "logits"
ONNX_EMBEDDING = "embedding"
META_ARCH, META_CLASS_NAMES, META_PREPROCESS = "imgclf.arch", "imgclf.class_names", "imgclf.preprocess"
# multi-label models only: {"thresholds": {label: t}}, the same record as model.json's `multi_label`
META_MULTI_LABEL, SPEC_MULTI_LABEL = "imgclf.multi_label", "multi_label"
# models with an embedding output only: model.json's `embedding` record (dim, how it was fitted)
META_EMBEDDING, SPEC_EMBEDDING = "imgclf.embedding", "embedding"


class SavesBundle(Protocol):
    """What `write_release` needs of a trained model (`TrainedModel` is one)."""

    def save(self, directory: str | Path) -> Path: ...


def read_spec(directory: str | Path) -> dict[str, Any] | None:
    """The bundle's `model.json` as written, or None when the folder has none."""
    path = Path(directory) / SPEC_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_spec(directory: str | Path, spec: Mapping[str, Any]) -> None:
    (Path(directory) / SPEC_FILE).write_text(json.dumps(spec, indent=2, default=str))


class BundleError(ValueError):
    """The bundle's spec asks for something a bundle may not hold (the message says what)."""


def _bare_onnx_name(directory: Path, file_name: object) -> str:
    """`file_name` when it names an .onnx file directly inside `directory`, else BundleError.

    A spec is data that travels with a registered version: a path in it (`../x.onnx`, `/etc/x.onnx`,
    a link out of the folder) would make the service load a file the bundle does not ship.
    """
    where = f"the bundle {directory} names serving model {file_name!r}"
    if not isinstance(file_name, str) or not file_name:
        raise BundleError(f"{where}: expected the name of an .onnx file in the bundle")
    if file_name != Path(file_name).name or any(c in file_name for c in "/\\\0:"):
        raise BundleError(f"{where}: it must be a bare file name inside the bundle, not a path")
    if not file_name.endswith(".onnx") or file_name.startswith("."):
        raise BundleError(f"{where}: expected the name of an .onnx file in the bundle")
    real = (directory / file_name).resolve()
    if real.exists() and not real.is_relative_to(directory.resolve()):
        raise BundleError(f"{where}: it is a link to a file outside the bundle")
    return file_name


def set_serving_model(directory: str | Path, file_name: str) -> None:
    """Record in the bundle's spec which ONNX file the service loads (the export's INT8-or-fp32 choice)."""
    directory = Path(directory)
    _bare_onnx_name(directory, file_name)
    if not (directory / file_name).is_file():
        raise FileNotFoundError(f"cannot serve {file_name}: it is not in the bundle {directory}")
    spec = read_spec(directory) or {}
    spec["serving"] = {"model": file_name}
    write_spec(directory, spec)


def serving_model(directory: str | Path) -> str:
    """The ONNX file a bundle is served from: the recorded choice, else the fp32 model.onnx. Always a
    bare file name inside the bundle (BundleError otherwise)."""
    spec = read_spec(directory) or {}
    serving = spec.get("serving", {})
    if not isinstance(serving, dict):
        raise BundleError(f"the bundle {directory} has a malformed `serving` entry in {SPEC_FILE}: {serving!r}")
    return _bare_onnx_name(Path(directory), serving.get("model", ONNX_FILE))


def write_release(
    directory: str | Path,
    model: SavesBundle,
    onnx: bytes,
    onnx_int8: bytes | None,
    *,
    metrics: Mapping[str, float],
    export_report: Mapping[str, Any],
    model_card: str,
) -> Path:
    """Everything a registered version ships, in one folder: the bundle, model.onnx, model.int8.onnx
    when an INT8 recipe won (the bundle then serves it), the test metrics, the export report and the
    model card."""
    directory = model.save(directory)
    (directory / ONNX_FILE).write_bytes(onnx)
    if onnx_int8 is not None:
        (directory / ONNX_INT8_FILE).write_bytes(onnx_int8)
    set_serving_model(directory, ONNX_FILE if onnx_int8 is None else ONNX_INT8_FILE)
    (directory / EVALUATION_FILE).write_text(json.dumps(dict(metrics), indent=2))
    (directory / EXPORT_REPORT_FILE).write_text(json.dumps(dict(export_report), indent=2, default=str))
    (directory / MODEL_CARD_FILE).write_text(model_card)
    return directory


def multi_label_record(class_names: Sequence[str], thresholds: Sequence[float]) -> dict[str, Any]:
    """What a multi-label model stores (model.json's `multi_label`, the ONNX `imgclf.multi_label`):
    its per-label thresholds by label name, so the record reads the same whatever the class order."""
    if len(thresholds) != len(class_names):
        raise ValueError(f"need one threshold per label ({len(class_names)}), got {len(thresholds)}")
    return {"thresholds": {name: float(t) for name, t in zip(class_names, thresholds)}}


def thresholds_from_record(record: object, class_names: Sequence[str], where: str) -> list[float]:
    """The thresholds of a `multi_label_record` in class order; BundleError naming `where` and the
    problem when the record is malformed (a label missing, a value that is not a number in [0, 1])."""
    thresholds = record.get("thresholds") if isinstance(record, dict) else None
    if not isinstance(thresholds, dict):
        raise BundleError(f"{where}: the multi-label record has no thresholds by label: {record!r:.200}")
    missing = [name for name in class_names if name not in thresholds]
    if missing:
        raise BundleError(f"{where}: the multi-label record has no threshold for {missing}")
    out = []
    for name in class_names:
        t = thresholds[name]
        if isinstance(t, bool) or not isinstance(t, int | float) or not (math.isfinite(t) and 0.0 <= t <= 1.0):
            raise BundleError(f"{where}: the threshold of {name!r} must be a number in [0, 1], not {t!r}")
        out.append(float(t))
    return out


@dataclass(frozen=True)
class OnnxMetadata:
    """What the export stores in an ONNX file so the file alone serves."""

    class_names: list[str]
    preprocess: PreprocessSpec
    thresholds: list[float] | None = None  # in class order; multi-label models only
    embedding_dim: int | None = None  # D of the `embedding` output; None: the file has logits only


def onnx_metadata(model: bytes | str | Path) -> OnnxMetadata:
    """Class names, PreprocessSpec and, for a multi-label model, its per-label thresholds."""
    import onnxruntime as ort

    session = ort.InferenceSession(
        model if isinstance(model, bytes) else str(model), providers=["CPUExecutionProvider"]
    )
    meta = session.get_modelmeta().custom_metadata_map
    missing = [key for key in (META_CLASS_NAMES, META_PREPROCESS) if key not in meta]
    if missing:
        raise ValueError(f"the ONNX model carries no {', '.join(missing)} metadata: it was not exported by imgclf")
    class_names = json.loads(meta[META_CLASS_NAMES])
    thresholds = None
    if META_MULTI_LABEL in meta:
        where = f"the ONNX model's {META_MULTI_LABEL} metadata"
        try:
            record = json.loads(meta[META_MULTI_LABEL])
        except ValueError as exc:
            raise BundleError(f"{where} is not JSON: {exc}") from None
        thresholds = thresholds_from_record(record, class_names, where)
    embedding_dim = None
    if META_EMBEDDING in meta:
        session_outputs = [output.name for output in session.get_outputs()]
        embedding_dim = _embedding_dim(meta[META_EMBEDDING], session_outputs)
    spec = PreprocessSpec.from_dict(json.loads(meta[META_PREPROCESS]))
    return OnnxMetadata(class_names, spec, thresholds, embedding_dim)


def _embedding_dim(record_json: str, outputs: list[str]) -> int:
    """D from the `imgclf.embedding` metadata; BundleError when it is malformed or the file has no
    `embedding` output to go with it."""
    where = f"the ONNX model's {META_EMBEDDING} metadata"
    try:
        record = json.loads(record_json)
    except ValueError as exc:
        raise BundleError(f"{where} is not JSON: {exc}") from None
    dim = record.get("dim") if isinstance(record, dict) else None
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise BundleError(f"{where} has no positive integer `dim`: {record_json:.200}")
    if ONNX_EMBEDDING not in outputs:
        raise BundleError(f"{where} describes an embedding, but the model's outputs are {outputs}")
    return dim


def read_onnx_metadata(model: bytes | str | Path) -> tuple[list[str], PreprocessSpec]:
    """Class names and PreprocessSpec stored in an ONNX file by the export (`onnx_metadata` has the
    multi-label thresholds too)."""
    meta = onnx_metadata(model)
    return meta.class_names, meta.preprocess
