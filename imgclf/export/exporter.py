"""Export a trained model in every format, each checked against torch, and say which one to serve.

`export_checked` is what the pipeline's quantize step needs: fp32 ONNX (fails when it disagrees with
torch) and the INT8 recipe search. `export_folder` is `imgclf export`: those plus TorchScript, the
OpenVINO IR when `openvino` is installed, latencies of every runtime measured side by side, and one
JSON report. The benchmark (bench/inference_latency.py) runs `export_folder` too.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from imgclf.bundle import ONNX_FILE, ONNX_INT8_FILE
from imgclf.models.trained import TrainedModel
from imgclf.latency import describe_machine, example_images, interleaved_rounds, measure_latency, onnx_runner, torch_runner
from imgclf.export.onnx import ExportedModel, cpu_session, export_onnx, onnx_logits, parity
from imgclf.export.quantize import (
    DEFAULT_CANDIDATES,
    Int8Recipe,
    Int8Search,
    Measure,
    decisions,
    matches,
    recipe_table_markdown,
    search_int8,
)

TORCHSCRIPT_FILE = "model.torchscript.pt"
REPORT_FILE = "export_report.json"
RECIPES_FILE = "int8_recipes.md"


class ExportConfig(BaseModel):
    """How the exports are checked and how the INT8 recipe is chosen (quantize step and `imgclf export`)."""

    model_config = ConfigDict(extra="forbid")

    tolerance: float = Field(0.01, ge=0, le=1, description="largest accuracy drop (fraction) an INT8 recipe may have vs fp32")
    min_agreement: float = Field(0.99, ge=0, le=1, description="smallest share of images on which an INT8 recipe must agree with fp32 on top-1")
    min_speedup: float = Field(1.05, gt=0, description="an INT8 recipe must be at least this much faster than ORT fp32 at batch 32")
    candidates: list[Int8Recipe] | None = Field(None, description="INT8 recipes to try; null: the default list")
    rounds: int = Field(3, ge=1, description="interleaved timing rounds; speedups are medians over them")
    max_abs_logit_diff: float = Field(1e-3, gt=0, description="an fp32 export (ONNX, TorchScript, OpenVINO) further than this from torch fails")


def calibration_sample(images: np.ndarray, size: int = 2048, seed: int = 0) -> np.ndarray:
    """A seeded sample of training images to calibrate INT8 with: every class shows up (the cache is
    in manifest order, often class by class), and the val split stays free to choose the recipe on.
    Up to 2048: on the digits, calibrating on 256 or 1024 images flipped 3 of 269 val predictions
    against fp32, on all 1259 train images 2 (the 99% agreement bar allows 2)."""
    if len(images) <= size:
        return np.asarray(images)
    return np.asarray(images[np.sort(np.random.default_rng(seed).choice(len(images), size, replace=False))])


class ExportMismatch(RuntimeError):
    """An fp32 export does not reproduce torch on the eval images."""


def _check(name: str, result: dict[str, float], config: ExportConfig, images: int) -> None:
    if result["max_abs_logit_diff"] > config.max_abs_logit_diff or result["top1_agreement"] < 1.0:
        raise ExportMismatch(
            f"{name} disagrees with torch on {images} eval images: max |logit diff| {result['max_abs_logit_diff']:.2e} "
            f"(limit {config.max_abs_logit_diff:.0e}), top-1 agreement {result['top1_agreement']:.4f} (needs 1.0)"
        )


def export_checked(
    trained: TrainedModel,
    calibration_images: np.ndarray,
    eval_images: np.ndarray,
    eval_labels: np.ndarray,
    config: ExportConfig = ExportConfig(),
    measure: Measure | None = None,
    test_images: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
) -> tuple[ExportedModel, Int8Search]:
    """fp32 ONNX checked against torch, then the INT8 search (calibrated on `calibration_images`,
    chosen on the labelled `eval_images`). With `test_images`, parity and the chosen INT8's agreement
    and accuracy drop are also reported on that held-out split, which played no part in the choice.
    The ExportedModel holds INT8 only when a recipe won."""
    spec = trained.preprocess
    fp32 = export_onnx(trained)
    network = trained.build()
    labels = np.asarray(eval_labels)
    _, onnx_parity, torch_accuracy = _checked_fp32(network, fp32, eval_images, labels, spec, config, ONNX_FILE)
    search = search_int8(
        fp32, calibration_images, eval_images, eval_labels, spec,
        tolerance=config.tolerance, min_agreement=config.min_agreement, min_speedup=config.min_speedup,
        candidates=tuple(config.candidates) if config.candidates is not None else DEFAULT_CANDIDATES,
        measure=measure, rounds=config.rounds,
    )
    report: dict[str, Any] = {
        "eval_images": len(eval_images),
        "torch_accuracy": torch_accuracy,
        "onnx_max_abs_logit_diff": onnx_parity["max_abs_logit_diff"],
        "onnx_top1_agreement": onnx_parity["top1_agreement"],
        "serve": search.serve,
        "int8_recipe": search.chosen,
        "int8_summary": search.summary(),
    }
    chosen = search.chosen_trial
    if chosen is not None:
        report.update(int8_accuracy=chosen.accuracy, int8_accuracy_drop=chosen.accuracy_drop, int8_top1_agreement=chosen.agreement, int8_speedup=chosen.speedup)
    if test_images is not None and test_labels is not None:
        report.update(_held_out_report(network, spec, fp32, search, test_images, np.asarray(test_labels), config))
    report["int8_search"] = search.report()
    return ExportedModel(onnx=fp32, onnx_int8=search.chosen_model, report=report), search


def _checked_fp32(
    network, fp32: bytes, images: np.ndarray, labels: np.ndarray, spec, config: ExportConfig, name: str
) -> tuple[np.ndarray, dict[str, float], float]:
    """Torch logits on `images`, the fp32 ONNX's parity with them (fails past the limits, naming
    `name`) and torch's accuracy on `labels`."""
    from imgclf.inference import predict_logits

    reference = predict_logits(network, images, spec)
    fp32_parity = parity(reference, onnx_logits(fp32, images, spec))
    _check(name, fp32_parity, config, len(images))
    return reference, fp32_parity, float(matches(decisions(reference, labels), labels).mean())


def _held_out_report(
    network, spec, fp32: bytes, search: Int8Search, images: np.ndarray, labels: np.ndarray, config: ExportConfig
) -> dict[str, Any]:
    """`test_*` figures: fp32 ONNX parity with torch (checked) and the chosen INT8's top-1 agreement
    and accuracy drop, on images the recipe choice never saw."""
    reference, fp32_parity, torch_accuracy = _checked_fp32(network, fp32, images, labels, spec, config, f"{ONNX_FILE} (test split)")
    out: dict[str, Any] = {
        "test_images": len(images),
        "test_torch_accuracy": torch_accuracy,
        "test_onnx_max_abs_logit_diff": fp32_parity["max_abs_logit_diff"],
        "test_onnx_top1_agreement": fp32_parity["top1_agreement"],
    }
    if search.chosen_model is not None:
        int8 = decisions(onnx_logits(search.chosen_model, images, spec), labels)
        out["test_int8_top1_agreement"] = float(matches(int8, decisions(reference, labels)).mean())
        out["test_int8_accuracy"] = float(matches(int8, labels).mean())
        out["test_int8_accuracy_drop"] = torch_accuracy - out["test_int8_accuracy"]
    return out


# -- runtimes side by side ------------------------------------------------------------------------


@dataclass
class Runtime:
    name: str
    run_batch: Callable[[np.ndarray], Any]  # uint8 images (N, H, W, 3) -> outputs, for timing
    logits: Callable[[np.ndarray], np.ndarray]  # uint8 images -> logits, for accuracy


def compare_runtimes(
    runtimes: list[Runtime], eval_images: np.ndarray, eval_labels: np.ndarray, spec, baseline: str, rounds: int = 3, batch_size: int = 32
) -> list[dict[str, Any]]:
    """Batch-1 p50/p95 and batch-`batch_size` throughput of each runtime, timed in `rounds`
    interleaved rounds (medians), with accuracy on the eval images and ratios to `baseline`."""
    one, many = example_images(spec, 1), example_images(spec, batch_size, seed=1)
    reports = interleaved_rounds(
        {r.name: functools.partial(measure_latency, r.run_batch, one, many, warmup=3, repeats=30, batch_repeats=5) for r in runtimes}, rounds
    )
    labels = np.asarray(eval_labels)
    rows = []
    for runtime in runtimes:
        own = reports[runtime.name]
        rows.append({
            "runtime": runtime.name,
            "batch1_p50_ms": median(r.p50_ms for r in own),
            "batch1_p95_ms": median(r.p95_ms for r in own),
            "images_per_s": median(r.batch32_images_per_s for r in own),
            "accuracy": float((runtime.logits(eval_images).argmax(1) == labels).mean()),
        })
    base = next(row for row in rows if row["runtime"] == baseline)
    for row in rows:
        row["throughput_vs_baseline"] = row["images_per_s"] / base["images_per_s"]
        row["accuracy_delta"] = row["accuracy"] - base["accuracy"]
    return rows


def runtime_table(rows: list[dict[str, Any]], baseline: str) -> str:
    """The `compare_runtimes` rows as an aligned text table."""
    width = max(len(row["runtime"]) for row in rows)
    lines = [f"{'runtime':{width}s} {'b1 p50 ms':>10s} {'b1 p95 ms':>10s} {'b32 img/s':>10s} {'vs ' + baseline:>14s} {'accuracy':>9s} {'delta':>8s}"]
    for row in rows:
        lines.append(
            f"{row['runtime']:{width}s} {row['batch1_p50_ms']:10.2f} {row['batch1_p95_ms']:10.2f} {row['images_per_s']:10.0f} "
            f"{row['throughput_vs_baseline']:13.2f}x {row['accuracy']:9.4f} {row['accuracy_delta']:+8.4f}"
        )
    return "\n".join(lines)


# -- imgclf export --------------------------------------------------------------------------------

ORT_FP32 = "ORT fp32"


def export_folder(
    trained: TrainedModel,
    out: str | Path,
    calibration_images: np.ndarray,
    eval_images: np.ndarray,
    eval_labels: np.ndarray,
    config: ExportConfig = ExportConfig(),
    measure: Measure | None = None,
    test_images: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """Write model.onnx, model.int8.onnx, model.torchscript.pt, model.xml/.bin (with openvino),
    int8_recipes.md and export_report.json to `out`; return the report.

    model.int8.onnx is the chosen recipe, or when none beat fp32 the recipe closest to fp32, written
    for inspection with `"serve": "fp32"` in the report. Every fp32 format must reproduce torch.
    """
    from imgclf.export.openvino_ir import OPENVINO_BIN, OPENVINO_XML, compile_openvino, export_openvino, openvino_available, openvino_logits, openvino_runner
    from imgclf.export.torchscript import export_torchscript, load_torchscript
    from imgclf.inference import predict_logits

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = trained.preprocess
    exported, search = export_checked(trained, calibration_images, eval_images, eval_labels, config, measure, test_images, test_labels)
    report = dict(exported.report)
    (out / ONNX_FILE).write_bytes(exported.onnx)
    files = [ONNX_FILE]

    int8 = search.best_agreeing()
    if int8 is not None:
        (out / ONNX_INT8_FILE).write_bytes(int8.model)
        files.append(ONNX_INT8_FILE)
        report["int8_file"] = {"recipe": int8.recipe.name, "served": search.chosen is not None, "accuracy": int8.accuracy,
                               "accuracy_drop": int8.accuracy_drop, "top1_agreement": int8.agreement, "speedup": int8.speedup}

    torch_model = trained.build()
    reference = predict_logits(torch_model, eval_images, spec)
    (out / TORCHSCRIPT_FILE).write_bytes(export_torchscript(trained))
    scripted, _, _ = load_torchscript(out / TORCHSCRIPT_FILE)
    report["torchscript"] = parity(reference, predict_logits(scripted, eval_images, spec))
    _check(TORCHSCRIPT_FILE, report["torchscript"], config, len(eval_images))
    files.append(TORCHSCRIPT_FILE)

    fp32_session = cpu_session(exported.onnx, spinning=False)
    runtimes = [
        Runtime("torch fp32", torch_runner(torch_model, spec), lambda x: predict_logits(torch_model, x, spec)),
        Runtime(ORT_FP32, onnx_runner(fp32_session, spec), lambda x: onnx_logits(fp32_session, x, spec)),
    ]
    if int8 is not None:
        int8_session = cpu_session(int8.model, spinning=False)
        label = f"ORT INT8 {int8.recipe.name}" + ("" if search.chosen else " (not served)")
        runtimes.append(Runtime(label, onnx_runner(int8_session, spec), lambda x: onnx_logits(int8_session, x, spec)))

    missing = openvino_available()
    if missing is None:
        export_openvino(exported.onnx, out / OPENVINO_XML)
        compiled = compile_openvino(out / OPENVINO_XML, precision="f32")
        report["openvino"] = parity(reference, openvino_logits(compiled, eval_images, spec))
        _check(OPENVINO_XML, report["openvino"], config, len(eval_images))
        files += [OPENVINO_XML, OPENVINO_BIN]
        runtimes.append(Runtime("OpenVINO fp32", openvino_runner(compiled, spec), lambda x: openvino_logits(compiled, x, spec)))
    else:
        report["openvino"] = {"skipped": missing}

    report["runtimes"] = compare_runtimes(runtimes, eval_images, eval_labels, spec, ORT_FP32, rounds=config.rounds)
    report["machine"] = describe_machine()
    report["files"] = files + [RECIPES_FILE, REPORT_FILE]
    (out / RECIPES_FILE).write_text(recipe_table_markdown(report["int8_search"]))
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2))
    return report
