"""The `data_validation` artifact: one record per dataset check, the file accounting and the exact
duplicates that were dropped; and the error that stops a run when an error-severity check failed."""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from imgclf.data.validation_config import Severity

EXAMPLES = 20  # files or classes named per failed check in the result (the full lists are artifacts)


class DataValidationError(ValueError):
    """The dataset as a whole failed validation; the message names each failed check and its files."""


@dataclass

@dataclass
class SuiteResult:
    """The `data_validation` artifact: one row per GX expectation, the file accounting, and the
    exact duplicates that were dropped (each with the copy that was kept)."""

    success: bool  # every expectation passed, warnings included
    checks: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # received, kept, quarantined, duplicates
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    duplicates: list[dict[str, str]] = field(default_factory=list)  # kept, duplicate, sha256, label
    fail_on_error: bool = True

    def failures(self, severity: Severity | None = None) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["success"] and severity in (None, c["severity"])]

    @property
    def stops_run(self) -> bool:
        """A check with severity error failed and the config lets errors stop the run."""
        return self.fail_on_error and bool(self.failures("error"))

    def verdict(self) -> str:
        errors, warns = len(self.failures("error")), len(self.failures("warning"))
        if errors:
            outcome = "FAILED (run stopped)" if self.fail_on_error else "FAILED (errors reported, run not stopped)"
            return f"{outcome}: {errors} error(s), {warns} warning(s)"
        return f"PASSED with {warns} warning(s)" if warns else "PASSED"

    def accounting(self) -> str:
        c = self.counts
        return (
            f"received {c.get('received', 0)} = kept {c.get('kept', 0)} + quarantined {c.get('quarantined', 0)}"
            f" + duplicates {c.get('duplicates', 0)}"
        )

    def summary(self) -> str:
        """One line per check, for logs."""
        return "\n".join(_check_line(c) for c in self.checks)

    def failure_report(self, root: str = "") -> str:
        """The error message when the run stops: verdict, accounting and every failed check."""
        where = f" for {root}" if root else ""
        lines = [f"data validation {self.verdict()}{where}", f"  {self.accounting()}"]
        if self.quarantine_reasons:
            lines.append(f"  quarantine reasons: {self.quarantine_reasons}")
        lines += [f"  {_check_line(c)}" for c in self.failures("error") + self.failures("warning")]
        return "\n".join(lines)

    def raise_for_errors(self, root: str = "") -> None:
        if self.stops_run:
            raise DataValidationError(self.failure_report(root))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SuiteResult":
        return cls(**data)

    def to_html(self) -> str:
        """A self-contained page (ZenML dashboard, MLflow artifact): verdict, accounting, each
        expectation with pass/fail, severity, observed value, threshold and the files it names."""
        colour = "#b00020" if self.failures("error") else "#b26a00" if self.failures("warning") else "#1b5e20"
        rows = []
        for c in self.checks:
            status = "pass" if c["success"] else f"FAIL ({c['severity']})"
            tone = "" if c["success"] else (" class='error'" if c["severity"] == "error" else " class='warning'")
            named = ", ".join(html.escape(str(x)) for x in c["unexpected"])
            if c["unexpected_count"] > len(c["unexpected"]):
                named += f" … ({c['unexpected_count']} in all)"
            rows.append(
                f"<tr{tone}><td>{html.escape(c['check'])}</td><td>{status}</td><td>{c['severity']}</td>"
                f"<td><code>{html.escape(c['expectation'])}</code>({html.escape(c['column'])})</td>"
                f"<td>{html.escape(_plain_text(c['observed']))}</td><td>{html.escape(c['threshold'])}</td>"
                f"<td>{named}</td></tr>"
            )
        reasons = ", ".join(f"{html.escape(k)}: {v}" for k, v in self.quarantine_reasons.items()) or "none"
        shown = self.duplicates[:500]
        dup_rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(d[k]))}</td>" for k in ("kept", "duplicate", "label")) + "</tr>"
            for d in shown
        )
        more = f"<p>… and {len(self.duplicates) - len(shown)} more</p>" if len(self.duplicates) > len(shown) else ""
        duplicates = (
            f"<h3>Exact duplicates ({len(self.duplicates)}): kept once, copies dropped</h3>"
            f"<table><tr><th>kept</th><th>duplicate (dropped)</th><th>label</th></tr>{dup_rows}</table>{more}"
            if self.duplicates
            else "<h3>Exact duplicates: none</h3>"
        )
        return (
            "<html><head><meta charset='utf-8'><style>"
            "body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;"
            "text-align:left;vertical-align:top}tr.error{background:#fde7e9}tr.warning{background:#fff4e0}"
            "</style></head><body>"
            f"<h2 style='color:{colour}'>Data validation {html.escape(self.verdict())}</h2>"
            f"<p>{html.escape(self.accounting())}</p><p>quarantine reasons: {reasons}</p>"
            "<table><tr><th>check</th><th>result</th><th>severity</th><th>expectation</th><th>observed</th>"
            f"<th>threshold</th><th>files / classes</th></tr>{''.join(rows)}</table>{duplicates}</body></html>"
        )


def _check_line(c: dict[str, Any]) -> str:
    status = "PASS" if c["success"] else ("ERROR" if c["severity"] == "error" else "WARNING")
    line = (
        f"{status} {c['check']} [{c['severity']}]: {c['expectation']}({c['column']}) "
        f"observed {_plain_text(c['observed'])}, expected {c['threshold']}"
    )
    if not c["success"] and c["unexpected"]:
        hidden = c["unexpected_count"] - len(c["unexpected"])
        line += f"; {', '.join(c['unexpected'])}" + (f" (+{hidden} more)" if hidden > 0 else "")
    return line


def plain(value: Any) -> Any:
    """GX observed values as JSON-safe Python (numpy scalars, NaN)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if np.isnan(value) else round(value, 4)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _plain_text(value: Any) -> str:
    return "n/a" if value is None else str(value)


def short(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return f"[{shown}{', …' if len(items) > limit else ''}]"
