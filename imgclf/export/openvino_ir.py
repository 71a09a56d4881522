"""OpenVINO IR (model.xml + model.bin) from the fp32 ONNX, and an OpenVINO runner for the benchmark.

Optional: `openvino` is imported only here, lazily; without it the callers skip the IR with the
message of `OpenVINOUnavailable`. Importing `openvino` sends a usage event to Intel unless a consent
file opts out or CI=true (openvino_telemetry); this project keeps telemetry off, so the import runs
with CI=true. The ONNX is read by the runtime's ONNX frontend (`Core.read_model`), not by the
`ovc` converter, which has telemetry of its own.

The CPU plugin computes in bf16 by default on CPUs with AVX512-BF16 or AMX (this machine has it);
`precision="f32"` asks for fp32, which is what the parity check needs.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from imgclf.bundle import ONNX_OUTPUT
from imgclf.preprocess import PreprocessSpec

OPENVINO_XML, OPENVINO_BIN = "model.xml", "model.bin"
OPENVINO_PIN = "openvino==2026.4.1"
_RT_INFO = "imgclf"  # rt_info section holding the ONNX file's imgclf.* metadata


class OpenVINOUnavailable(RuntimeError):
    """The optional `openvino` package is missing; the message says how to add it."""


def _openvino():
    if "openvino" not in sys.modules:
        before = os.environ.get("CI")
        os.environ["CI"] = "true"  # openvino_telemetry stays off in CI: no usage event on import
        try:
            import openvino  # noqa: F401
        except ImportError as exc:
            raise OpenVINOUnavailable(
                f"OpenVINO IR skipped: the optional package is not installed ({exc}); "
                f"`pip install {OPENVINO_PIN}` adds it"
            ) from None
        finally:
            if before is None:
                del os.environ["CI"]
            else:
                os.environ["CI"] = before
    return sys.modules["openvino"]


def openvino_available() -> str | None:
    """None when OpenVINO can be used, else why not (for a 'skipped' line)."""
    try:
        _openvino()
    except OpenVINOUnavailable as exc:
        return str(exc)
    return None


def export_openvino(fp32_onnx: bytes, xml_path: str | Path) -> Path:
    """Write the IR pair (`xml_path` and its .bin beside it), weights kept fp32 (save_model would
    compress them to fp16), with the ONNX file's class names and PreprocessSpec in rt_info."""
    import onnx

    ov = _openvino()
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="imgclf-ov-") as tmp:
        src = Path(tmp, "model.onnx")
        src.write_bytes(fp32_onnx)
        model = ov.Core().read_model(str(src))
    for prop in onnx.load_from_string(fp32_onnx).metadata_props:
        if prop.key.startswith("imgclf."):
            model.set_rt_info(prop.value, [_RT_INFO, prop.key.removeprefix("imgclf.")])
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def read_openvino_metadata(xml_path: str | Path) -> tuple[list[str], PreprocessSpec]:
    ov = _openvino()
    model = ov.Core().read_model(str(xml_path))
    if not model.has_rt_info([_RT_INFO, "class_names"]):
        raise ValueError(f"{xml_path} has no imgclf metadata in its rt_info: not written by export_openvino")
    info = {key: model.get_rt_info([_RT_INFO, key]).astype(str) for key in ("class_names", "preprocess")}
    return json.loads(info["class_names"]), PreprocessSpec.from_dict(json.loads(info["preprocess"]))


def compile_openvino(model_path: str | Path, precision: Literal["f32", "default"] = "f32") -> Any:
    """A compiled CPU model from an IR .xml or an .onnx file (a QDQ INT8 ONNX runs as INT8 here)."""
    ov = _openvino()
    config = {"INFERENCE_PRECISION_HINT": "f32"} if precision == "f32" else {}
    return ov.Core().compile_model(str(model_path), "CPU", config)


def openvino_runner(compiled: Any, spec: PreprocessSpec) -> Callable[[np.ndarray], Any]:
    """A `run_batch` (imgclf.latency) for a compiled model; uint8 images in, normalised here."""
    request = compiled.create_infer_request()

    def run(batch: np.ndarray) -> Any:
        return request.infer({0: spec.normalize(np.asarray(batch))})

    return run


def openvino_logits(compiled: Any, images: np.ndarray, spec: PreprocessSpec, batch_size: int = 64) -> np.ndarray:
    """The `logits` output by name (a model with an embedding has a second output)."""
    run, logits = openvino_runner(compiled, spec), compiled.output(ONNX_OUTPUT)
    return np.concatenate(
        [np.array(run(images[i : i + batch_size])[logits]) for i in range(0, len(images), batch_size)]
    )
