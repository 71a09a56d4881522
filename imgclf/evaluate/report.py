"""The evaluation as one self-contained HTML page: every figure is embedded as a data URI, so the file
can be opened from the ZenML dashboard, an MLflow run or an e-mail without anything beside it."""

from __future__ import annotations

import html
import math
from typing import Any, Mapping

from imgclf.evaluate.metrics import EvaluationReport, GateResult
from imgclf.evaluate.plots import confused_pairs, png_data_uri

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:1.5em;margin-bottom:0}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin-top:4px}table{border-collapse:collapse;margin:8px 0;font-size:.9em}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}
.pass{background:#e6f4ea;border:1px solid #34a853;padding:8px 12px;border-radius:4px}
.fail{background:#fce8e6;border:1px solid #d93025;padding:8px 12px;border-radius:4px}
.note{background:#fff8e1;border:1px solid #f9a825;padding:6px 10px;border-radius:4px;margin:6px 0}
figure{display:inline-block;margin:8px 12px 8px 0;vertical-align:top}figcaption{font-size:.85em;color:#555}
img{max-width:100%}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table cell; n/a for missing or undefined values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def ci(value: Any, low: Any, high: Any) -> str:
    """`0.9963 [0.9888, 1.0000]`, or the value alone when no interval was computed."""
    return fmt(value) if low is None or high is None else f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def worst_classes(report: EvaluationReport, n: int = 3) -> list[tuple[str, float, int]]:
    """Up to `n` classes with the lowest accuracy (recall) below 1: (name, accuracy, test images)."""
    scored = [(name, acc, int(report.per_class.get(name, {}).get("support") or 0))
              for name, acc in report.per_class_accuracy.items() if acc is not None and acc < 1.0]
    return sorted(scored, key=lambda t: (t[1], t[0]))[:n]


def failure_lines(report: EvaluationReport, top: int = 5) -> list[str]:
    """How the model fails, in words: the most frequent confusions (`true 8 predicted as 1: 3 of 27
    (11.1%)`) and the weakest classes; for multi-label data the labels with the lowest AP."""
    if report.multi_label:
        low = sorted(report.multi_label.get("average_precision", {}).items(), key=lambda kv: kv[1])[:3]
        return ["Lowest average precision: " + ", ".join(f"{n} ({v:.4f})" for n, v in low)] if low else []
    lines = []
    for t, p, count in confused_pairs(report.confusion, top):
        support = sum(report.confusion[t])
        lines.append(f"true {report.class_names[t]} predicted as {report.class_names[p]}: {count} of {support} ({100 * count / support:.1f}%)")
    worst = worst_classes(report)
    if worst:
        lines.append("Lowest per-class accuracy: " + ", ".join(f"{n} {a:.4f} (n={s})" for n, a, s in worst))
    return lines or ["No confusions on the test split."]


def headline_rows(report: EvaluationReport) -> list[list[str]]:
    """[metric, value] rows of the headline metrics, CIs included (report and model card)."""
    rows = [
        ["exact-match accuracy" if report.multi_label else "accuracy", ci(report.accuracy, report.accuracy_ci_low, report.accuracy_ci_high)],
        ["macro F1", ci(report.macro_f1, report.macro_f1_ci_low, report.macro_f1_ci_high)],
    ]
    if report.multi_label:
        rows += [["mAP", fmt(report.multi_label.get("mean_average_precision"))], ["micro F1", fmt(report.multi_label.get("micro_f1"))]]
    else:
        rows += [
            ["weighted F1", fmt(report.weighted_f1)],
            ["macro precision / recall", f"{fmt(report.macro_precision)} / {fmt(report.macro_recall)}"],
            *[[f"top-{k} accuracy", fmt(v)] for k, v in report.top_k_accuracy.items()],
            ["ROC-AUC (one-vs-rest, macro)", fmt(report.roc_auc_macro)],
            ["expected calibration error", fmt(report.ece)],
        ]
    return rows + [
        ["latency batch 1, p50 / p95 (ms)", f"{fmt(report.latency_p50_ms, 2)} / {fmt(report.latency_p95_ms, 2)}"],
        ["throughput batch 32 (images/s)", fmt(report.batch32_images_per_s, 1)],
    ]


SUBGROUP_HEADER = ["column", "value", "test images", "accuracy [95% CI]", "macro F1"]


def subgroup_rows(report: EvaluationReport) -> list[list[Any]]:
    return [[r["column"], r["value"], r["n_images"], ci(r["accuracy"], r["accuracy_ci_low"], r["accuracy_ci_high"]), fmt(r["macro_f1"])]
            for r in (report.subgroups or {}).get("rows", [])]


def worst_subgroup_lines(report: EvaluationReport) -> list[str]:
    return [f"Worst {column}: {row['value']}, accuracy {ci(row['accuracy'], row['accuracy_ci_low'], row['accuracy_ci_high'])} "
            f"on {row['n_images']} images" for column, row in (report.subgroups or {}).get("worst", {}).items()]


def _table(header: list[str], rows: list[list[Any]], left: int = 1) -> str:
    head = "".join(f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{_e(c)}</td>' for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _gate_html(gate: GateResult) -> str:
    rows = [[c["name"], fmt(c["value"]), f'{c["comparison"]} {c["threshold"]}', "pass" if c["passed"] else "FAIL"] for c in gate.checks]
    verdict = "PASSED: the model may be deployed" if gate.passed else "FAILED: the model is held back from deployment"
    return f'<div class="{"pass" if gate.passed else "fail"}"><b>Quality gate {verdict}</b></div>' + _table(
        ["check", "value", "required", "result"], rows)


def _headline(report: EvaluationReport) -> str:
    level = f"{100 * report.ci_level:g}%"
    caption = (f"<p class=sub>{report.n_images} test images. Intervals: {level} percentile bootstrap, "
               f"{report.n_bootstrap} resamples, seed {report.bootstrap_seed}.</p>") if report.n_bootstrap else ""
    return _table(["metric", "value"], headline_rows(report)) + caption


def _comparison_html(report: EvaluationReport) -> str:
    c = report.comparison
    if not c:
        return f"<p>{_e(report.comparison_note or 'no comparison was made')}</p>"
    rows = [
        ["accuracy", fmt(c["champion_accuracy"]), fmt(c["challenger_accuracy"]),
         f'{c["accuracy_delta"]:+.4f} [{c["accuracy_ci_low"]:+.4f}, {c["accuracy_ci_high"]:+.4f}]', f'{c["accuracy_p_value"]:.3g}'],
        ["macro F1", fmt(c["champion_macro_f1"]), fmt(c["challenger_macro_f1"]),
         f'{c["macro_f1_delta"]:+.4f} [{c["macro_f1_ci_low"]:+.4f}, {c["macro_f1_ci_high"]:+.4f}]', f'{c["macro_f1_p_value"]:.3g}'],
    ]
    return (f'<div class="note"><b>{_e(c["verdict"])}</b></div><p>{_e(report.comparison_note)}</p>'
            + _table(["metric", "production", "this model", "delta [95% CI]", "paired bootstrap p"], rows)
            + f'<p>McNemar ({_e(c["mcnemar_method"])}): production-only correct {c["mcnemar_b"]}, this-model-only correct '
              f'{c["mcnemar_c"]}, p = {c["mcnemar_p_value"]:.3g}.</p>')


def _per_class_html(report: EvaluationReport) -> str:
    if report.multi_label:
        ml = report.multi_label
        rows = [[n, fmt(ml["average_precision"].get(n)), fmt(ml["thresholds"].get(n)), fmt(v["precision"]), fmt(v["recall"]),
                 fmt(v["f1"]), v["support"]] for n, v in ml["per_label"].items()]
        return _table(["label", "average precision", "threshold (tuned on val)", "precision", "recall", "F1", "positives"], rows)
    rows = [[n, fmt(v.get("accuracy")), fmt(v["precision"]), fmt(v["recall"]), fmt(v["f1"]), fmt(v.get("roc_auc")), v["support"]]
            for n, v in report.per_class.items()]
    return _table(["class", "accuracy", "precision", "recall", "F1", "ROC-AUC", "test images"], rows)


def _confusion_html(report: EvaluationReport) -> str:
    """Counts, shaded by the row-normalised share (so a small class's errors still stand out)."""
    if not report.confusion or len(report.class_names) > 60:
        return "<p>(confusion matrix omitted: more than 60 classes; see confusion_matrix.json)</p>" if report.confusion else ""
    names = report.class_names
    head = '<tr><th class="l">true \\ predicted</th>' + "".join(f"<th>{_e(n)}</th>" for n in names) + "</tr>"
    body = []
    for i, row in enumerate(report.confusion):
        cells = []
        for j, count in enumerate(row):
            share = report.confusion_normalized[i][j] if report.confusion_normalized else 0.0
            colour = "52,168,83" if i == j else "217,48,37"
            cells.append(f'<td style="background:rgba({colour},{0.08 + 0.7 * share if count else 0:.2f})" '
                         f'title="{100 * share:.1f}% of true {_e(names[i])}">{count}</td>')
        body.append(f'<tr><th class="l">{_e(names[i])}</th>{"".join(cells)}</tr>')
    return f"<table>{head}{''.join(body)}</table><p class=sub>Rows: true class. Shading: share of the row.</p>"


def _subgroups_html(report: EvaluationReport) -> str:
    sg = report.subgroups
    if not sg or (not sg.get("rows") and not sg.get("skipped")):
        return "<p>The manifest has no extra columns (such as <code>site</code>), so there are no subgroups to compare.</p>"
    parts = [f'<div class="note">{_e(line)}</div>' for line in worst_subgroup_lines(report)]
    rows = subgroup_rows(report)
    if rows:
        parts.append(_table(SUBGROUP_HEADER, rows, left=2))
    parts += [f"<p>{_e(column)}: {_e(why)}</p>" for column, why in sg.get("skipped", {}).items()]
    return "".join(parts)


def render_html(
    report: EvaluationReport, gate: GateResult, figures: Mapping[str, bytes], title: str, facts: Mapping[str, Any] | None = None
) -> str:
    """The report page. `facts`: a few lines about the model and data (architecture, data hash, ...)."""
    facts_html = ("<table>" + "".join(f'<tr><th class="l">{_e(k)}</th><td class="l">{_e(v)}</td></tr>' for k, v in facts.items())
                  + "</table>") if facts else ""
    figure_html = "".join(
        f'<figure><img alt="{_e(name)}" src="{png_data_uri(png)}"><figcaption>{_e(name)}</figcaption></figure>'
        for name, png in figures.items()
    )
    failure_html = "<ul>" + "".join(f"<li>{_e(line)}</li>" for line in failure_lines(report)) + "</ul>"
    notes = "".join(f'<div class="note">{_e(n)}</div>' for n in report.notes)
    sections = [
        ("Quality gate", _gate_html(gate)),
        ("Metrics", _headline(report)),
        ("Against the production model", _comparison_html(report)),
        ("Known failure patterns", failure_html),
        ("Subgroups", _subgroups_html(report)),
        ("Per class", _per_class_html(report)),
        ("Confusion matrix", _confusion_html(report)),
        ("Figures", figure_html or "<p>No figures for this kind of data set.</p>"),
    ]
    body = "".join(f"<h2>{_e(name)}</h2>{content}" for name, content in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{_STYLE}</style></head>'
            f'<body><h1>{_e(title)}</h1>{facts_html}{notes}{body}</body></html>')
