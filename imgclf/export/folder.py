"""`imgclf export`: a trained model in every format in one folder, each fp32 format checked against
torch, every runtime timed side by side, and one JSON report. The benchmark
(bench/inference_latency.py) runs `export_folder` too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgclf.bundle import EXPORT_REPORT_FILE, ONNX_FILE, ONNX_INT8_FILE
from imgclf.export.exporter import ExportConfig, ExportImages, ExportReport, check_parity, export_checked
from imgclf.export.int8_report import RECIPES_FILE, recipe_table_markdown
from imgclf.export.int8_search import Int8Search, Measure
from imgclf.export.onnx import Parity, cpu_session, onnx_logits, parity
from imgclf.export.openvino_ir import (
    OPENVINO_BIN,
    OPENVINO_XML,
    compile_openvino,
    export_openvino,
    openvino_available,
    openvino_logits,
    openvino_runner,
)
from imgclf.export.runtimes import ORT_FP32, Runtime, RuntimeRow, compare_runtimes
from imgclf.export.torchscript import export_torchscript, load_torchscript
from imgclf.inference import predict_logits
from imgclf.latency import describe_machine, onnx_runner, torch_runner
from imgclf.models.trained import TrainedModel
from imgclf.preprocess import PreprocessSpec

TORCHSCRIPT_FILE = "model.torchscript.pt"


@dataclass
class Int8File:
    """model.int8.onnx of the folder: the chosen recipe, or when fp32 is served the one closest to fp32."""

    recipe: str
    served: bool
    accuracy: float | None
    accuracy_drop: float | None
    top1_agreement: float | None
    speedup: float | None


@dataclass(kw_only=True)
class FolderReport:
    """export_report.json of `imgclf export`: the checked export's report, then the other formats."""

    checked: ExportReport
    int8_file: Int8File | None  # None: every recipe failed
    torchscript: Parity
    openvino: Parity | None
    openvino_skipped: str | None  # why there is no OpenVINO IR
    runtimes: list[RuntimeRow]
    machine: str
    files: list[str]

    def to_dict(self) -> dict[str, Any]:
        """The JSON: the checked report's keys at the top level, beside these."""
        out = self.checked.to_dict()
        if self.int8_file is not None:
            out["int8_file"] = asdict(self.int8_file)
        out["torchscript"] = asdict(self.torchscript)
        out["openvino"] = asdict(self.openvino) if self.openvino is not None else {"skipped": self.openvino_skipped}
        out.update(runtimes=[asdict(row) for row in self.runtimes], machine=self.machine, files=self.files)
        return out


def _onnx_runtime(name: str, model: bytes, spec: PreprocessSpec) -> Runtime:
    def open_session():
        session = cpu_session(model, spinning=False)
        return onnx_runner(session, spec), lambda x: onnx_logits(session, x, spec)

    return Runtime(name, open_session)


def _openvino_runtime(xml: Path, spec: PreprocessSpec) -> Runtime:
    def open_compiled():
        compiled = compile_openvino(xml, precision="f32")
        return openvino_runner(compiled, spec), lambda x: openvino_logits(compiled, x, spec)

    return Runtime("OpenVINO fp32", open_compiled)


def _write_int8(out: Path, search: Int8Search, spec: PreprocessSpec) -> tuple[Int8File, Runtime] | None:
    """model.int8.onnx (served or not) and its runtime; None when no recipe quantised."""
    int8 = search.best_agreeing()
    if int8 is None:
        return None
    (out / ONNX_INT8_FILE).write_bytes(int8.model)
    served = search.chosen is not None
    described = Int8File(
        recipe=int8.recipe.name,
        served=served,
        accuracy=int8.accuracy,
        accuracy_drop=int8.accuracy_drop,
        top1_agreement=int8.agreement,
        speedup=int8.speedup,
    )
    label = f"ORT INT8 {int8.recipe.name}" + ("" if served else " (not served)")
    return described, _onnx_runtime(label, int8.model, spec)


def _write_torchscript(
    trained: TrainedModel, out: Path, reference: np.ndarray, images: np.ndarray, config: ExportConfig
) -> Parity:
    """The TorchScript file, checked against torch's `reference` logits on `images`."""
    (out / TORCHSCRIPT_FILE).write_bytes(export_torchscript(trained))
    scripted, _, _ = load_torchscript(out / TORCHSCRIPT_FILE)
    result = parity(reference, predict_logits(scripted, images, trained.preprocess))
    check_parity(TORCHSCRIPT_FILE, result, config, len(images))
    return result


def _write_openvino(
    fp32: bytes, out: Path, reference: np.ndarray, images: np.ndarray, spec: PreprocessSpec, config: ExportConfig
) -> tuple[Parity, Runtime]:
    """The OpenVINO IR, checked against torch's `reference` logits on `images`, and its runtime."""
    export_openvino(fp32, out / OPENVINO_XML)
    compiled = compile_openvino(out / OPENVINO_XML, precision="f32")
    result = parity(reference, openvino_logits(compiled, images, spec))
    check_parity(OPENVINO_XML, result, config, len(images))
    return result, _openvino_runtime(out / OPENVINO_XML, spec)


def export_folder(
    trained: TrainedModel,
    out: str | Path,
    images: ExportImages,
    config: ExportConfig = ExportConfig(),
    measure: Measure | None = None,
) -> FolderReport:
    """Write model.onnx, model.int8.onnx, model.torchscript.pt, model.xml/.bin (with openvino),
    int8_recipes.md and export_report.json to `out`; return the report.

    model.int8.onnx is the chosen recipe, or when none beat fp32 the recipe closest to fp32, written
    for inspection with `"serve": "fp32"` in the report. Every fp32 format must reproduce torch.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = trained.preprocess
    exported, search = export_checked(trained, images, config, measure)
    eval_images, eval_labels = images.eval_images, images.eval_labels
    (out / ONNX_FILE).write_bytes(exported.onnx)
    torch_model = trained.build()
    reference = predict_logits(torch_model, eval_images, spec)
    int8 = _write_int8(out, search, spec)
    torchscript = _write_torchscript(trained, out, reference, eval_images, config)
    skipped = openvino_available()
    openvino = _write_openvino(exported.onnx, out, reference, eval_images, spec, config) if skipped is None else None
    runtimes = [
        Runtime(
            "torch fp32", lambda: (torch_runner(torch_model, spec), lambda x: predict_logits(torch_model, x, spec))
        ),
        _onnx_runtime(ORT_FP32, exported.onnx, spec),
        *([int8[1]] if int8 else []),
        *([openvino[1]] if openvino else []),
    ]
    report = FolderReport(
        checked=exported.report,
        int8_file=int8[0] if int8 else None,
        torchscript=torchscript,
        openvino=openvino[0] if openvino else None,
        openvino_skipped=skipped,
        runtimes=compare_runtimes(runtimes, eval_images, eval_labels, spec, ORT_FP32, rounds=config.rounds),
        machine=describe_machine(),
        files=[ONNX_FILE, *([ONNX_INT8_FILE] if int8 else []), TORCHSCRIPT_FILE]
        + ([OPENVINO_XML, OPENVINO_BIN] if openvino else [])
        + [RECIPES_FILE, EXPORT_REPORT_FILE],
    )
    (out / RECIPES_FILE).write_text(recipe_table_markdown(exported.report.int8_search))
    (out / EXPORT_REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2))
    return report
