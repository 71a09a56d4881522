"""The model card: what the model is for, what it was trained on, how well it does (with intervals and
subgroups), how it fails and where not to trust it, as Markdown generated from the run itself."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from imgclf.data.manifest import DatasetManifest
from imgclf.evaluate.gate import GateResult
from imgclf.evaluate.metrics import EvaluationReport
from imgclf.evaluate.summary import (
    SUBGROUP_HEADER,
    failure_lines,
    fmt,
    headline_rows,
    subgroup_rows,
    worst_subgroup_lines,
)
from imgclf.models.trained import TrainedModel


class ModelCardConfig(BaseModel):
    """The parts of the card that only people know: set them in the run config."""

    model_config = ConfigDict(extra="forbid")

    purpose: str = "Classify an image into one of the classes of its training data."
    intended_use: str = "Images like the training data (same source, framing and resolution), scored by the service."
    out_of_scope: str = (
        "Images of other kinds or sources than the training data; "
        "decisions that need a calibrated probability without review."
    )
    owner: str = ""
    limitations: list[str] = []  # known caveats to state on every card, besides the measured ones


# the training settings the card lists, in this order
_TRAINING_SETTINGS = (
    "transfer", "image_size", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule",
    "label_smoothing", "ema_decay", "seed",
)  # fmt: skip


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _data_section(trained: TrainedModel, manifest: DatasetManifest) -> str:
    records = manifest.records
    splits = records["split"].value_counts().to_dict() if "split" in records.columns else {}
    counts = manifest.class_counts()
    if "split" in records.columns:
        rows = [
            [label, *[int(counts.loc[label].get(s, 0)) for s in ("train", "val", "test")]] for label in counts.index
        ]
        per_class = _table(["class", "train", "val", "test"], rows)
    else:
        per_class = ""
    extra = manifest.extra_columns
    return "\n".join(
        [
            f"- Images: {len(records)} (train {splits.get('train', 0)}, val {splits.get('val', 0)}, "
            f"test {splits.get('test', 0)})",
            f"- Classes ({len(trained.class_names)}): {', '.join(trained.class_names)}",
            f"- Data hash: `{trained.info.get('data_hash') or manifest.content_hash()}`",
            f"- Data root: `{manifest.root}`",
            f"- Extra columns (subgroups): {', '.join(extra) if extra else 'none'}",
            "",
            per_class,
        ]
    )


def _training_section(trained: TrainedModel) -> str:
    config = trained.info.get("train_config") or {}
    rows = [[k, config[k]] for k in _TRAINING_SETTINGS if k in config]
    spec = trained.preprocess
    lines = [
        f"- Architecture: `{trained.arch}`, "
        + ("fine-tuned from ImageNet weights" if config.get("pretrained") else "trained from scratch"),
        f"- Preprocessing: {spec.image_size} px, mean {list(spec.mean)}, std {list(spec.std)}",
        f"- Best validation score {fmt(trained.info.get('best_val_score'))} at epoch {trained.info.get('best_epoch')}"
        + (" (stopped early)" if trained.info.get("stopped_early") else ""),
        *_lineage(trained.info),
        "",
        _table(["setting", "value"], rows) if rows else "",
    ]
    return "\n".join(lines)


def _lineage(info: dict[str, Any]) -> list[str]:
    """How a distilled or pruned model came to be (its settings above are the last training run's)."""
    out = []
    if "distill_report" in info:
        r = info["distill_report"]
        out.append(
            f"- Distilled from a `{r['teacher_arch']}` teacher (temperature {r['temperature']}, alpha {r['alpha']}, "
            f"{r['epochs']} epochs): student test accuracy {r['student_distilled']['test_accuracy']:.4f} vs teacher "
            f"{r['teacher']['test_accuracy']:.4f}"
        )
    if "prune_report" in info:
        r = info["prune_report"]
        out.append(
            f"- Channel-pruned by {r['amount']:.0%} and fine-tuned {r['finetune_epochs']} epochs: parameters "
            f"{r['before']['params']:,} -> {r['after']['params']:,}, "
            f"test accuracy {r['before']['test_accuracy']:.4f} -> {r['after']['test_accuracy']:.4f}"
        )
    return out


def _metrics_section(report: EvaluationReport, gate: GateResult) -> str:
    lines = [
        f"On the held-out test split ({report.n_images} images); intervals are {100 * report.ci_level:g}% bootstrap "
        f"({report.n_bootstrap} resamples, seed {report.bootstrap_seed}).",
        "",
        _table(["metric", "value"], headline_rows(report)),
        "",
        f"Quality gate {'passed' if gate.passed else 'FAILED'}: {gate.explain()}",
    ]
    if report.comparison_note:
        lines += ["", f"Production comparison: {report.comparison_note}"]
    return "\n".join(lines)


def _subgroup_section(report: EvaluationReport) -> str:
    rows = subgroup_rows(report)
    skipped = [f"- {column}: {why}" for column, why in report.subgroups.skipped.items()]
    if not rows:
        return "\n".join(
            skipped or ["No subgroup columns in the manifest; performance per site, device or population is unknown."]
        )
    return "\n".join(
        [_table(SUBGROUP_HEADER, rows), "", *[f"- {line}" for line in worst_subgroup_lines(report)], *skipped]
    )


def _limitations(report: EvaluationReport, config: ModelCardConfig) -> str:
    lines = [f"- {text}" for text in config.limitations]
    if report.accuracy_ci_low is not None and report.accuracy_ci_high is not None:
        lines.append(
            f"- The test split holds {report.n_images} images: accuracy is only known to within "
            f"[{report.accuracy_ci_low:.4f}, {report.accuracy_ci_high:.4f}]."
        )
    if report.ece is not None and report.ece > 0.05:
        direction = "under" if _mean_gap(report) > 0 else "over"
        lines.append(
            f"- Calibration: ECE {report.ece:.3f}; the model is {direction}-confident, so do not read its "
            "probabilities as frequencies without recalibration."
        )
    if report.latency_p50_ms is not None:
        lines.append("- Latency was measured on the evaluating machine; it differs on other hardware.")
    lines += [f"- {note}" for note in report.notes]
    lines.append(
        "- Performance outside the training distribution (other cameras, sites, populations) was not measured."
    )
    return "\n".join(lines)


def _mean_gap(report: EvaluationReport) -> float:
    """Count-weighted mean of (accuracy - confidence) over the reliability bins: > 0 is under-confident."""
    rel = report.reliability or {}
    pairs = [
        (a - c, n) for a, c, n in zip(rel.get("accuracy", []), rel.get("confidence", []), rel.get("counts", [])) if n
    ]
    total = sum(n for _, n in pairs)
    return sum(g * n for g, n in pairs) / total if total else 0.0


def _queue_line() -> str:
    from imgclf.labelling.policy import QueuePolicy

    policy = QueuePolicy()
    return (
        "- The active-learning queue keeps only the predictions it finds uncertain (lowest margin or highest "
        "entropy, per-class quotas): the image re-encoded as a PNG without metadata (no EXIF, GPS or ICC), at "
        f"most {policy.max_side} px a side, with its sha256, the prediction and the model version; by default "
        f"for at most {policy.max_age_days:g} days ({policy.max_items} images, {policy.max_bytes // 2**20} MiB), "
        'or until labelled and imported into the data (README, "Active-learning queue").\n'
        "- The prediction log keeps one row per answered image: its sha256, size, format, six image statistics, "
        "the answer's label, confidence, margin, entropy and top-k, the latency, the model's embedding, and the "
        "URL's host for a fetched image; never the image, its EXIF or the URL's path and query; by default for "
        '30 days (IMGCLF_PREDICTION_LOG_DAYS; README, "Monitoring and retraining").'
    )


def model_card(
    trained: TrainedModel,
    manifest: DatasetManifest,
    report: EvaluationReport,
    gate: GateResult,
    config: ModelCardConfig = ModelCardConfig(),
    model_name: str = "image-classifier",
    version: str | None = None,
) -> str:
    """The card as Markdown, from the run's own model, data and evaluation."""
    title = f"# Model card: {model_name}" + (f" (version {version})" if version else "")
    sections = [
        title,
        "## Purpose and intended use",
        f"- Purpose: {config.purpose}\n- Intended use: {config.intended_use}\n- Out of scope: {config.out_of_scope}"
        + (f"\n- Owner: {config.owner}" if config.owner else ""),
        "## Data",
        _data_section(trained, manifest),
        "## Training",
        _training_section(trained),
        "## Metrics",
        _metrics_section(report, gate),
        "## Subgroups",
        _subgroup_section(report),
        "## Known failure patterns",
        "\n".join(f"- {line}" for line in failure_lines(report)),
        "## Limitations and caveats",
        _limitations(report, config),
        "## What the service keeps of the images it scores",
        _queue_line(),
    ]
    return "\n\n".join(sections) + "\n"
