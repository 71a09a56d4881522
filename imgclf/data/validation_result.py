"""The `data_validation` artifact: one record per dataset check, the file accounting and the exact
duplicates that were dropped; and the error that stops a run when an error-severity check failed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from imgclf.data.validation_config import Severity
from imgclf.render import render

EXAMPLES = 20  # files or classes named per failed check in the result (the full lists are artifacts)
DUPLICATES_SHOWN = 500  # rows of the duplicates table on the page (the full list is in suite.json)


class DataValidationError(ValueError):
    """The dataset as a whole failed validation; the message names each failed check and its files."""


@dataclass
class SuiteCheck:
    """The outcome of one GX expectation: what was checked, against what, and the rows it names."""

    suite: str  # the GX suite (images, labels, kept, class_counts)
    check: str  # the check's name in the config (severity, thresholds)
    severity: Severity
    expectation: str  # the GX expectation type
    column: str
    success: bool
    observed: Any  # JSON-safe (see `plain`), None when GX observed nothing
    threshold: str
    unexpected_count: int
    unexpected: list[str] = field(default_factory=list)  # the first EXAMPLES paths or classes

    @property
    def status(self) -> str:
        return "PASS" if self.success else ("ERROR" if self.severity == "error" else "WARNING")

    @property
    def observed_text(self) -> str:
        return "n/a" if self.observed is None else str(self.observed)

    @property
    def hidden(self) -> int:
        """How many of the unexpected rows are not named."""
        return max(self.unexpected_count - len(self.unexpected), 0)

    def line(self) -> str:
        """One line for logs and the error message."""
        line = (
            f"{self.status} {self.check} [{self.severity}]: {self.expectation}({self.column}) "
            f"observed {self.observed_text}, expected {self.threshold}"
        )
        if not self.success and self.unexpected:
            line += f"; {', '.join(self.unexpected)}" + (f" (+{self.hidden} more)" if self.hidden else "")
        return line


@dataclass(frozen=True, order=True)
class Duplicate:
    """An exact duplicate (same sha256 and label) that was dropped, and the copy that was kept."""

    kept: str
    duplicate: str
    sha256: str
    label: str


@dataclass
class SuiteResult:
    """The `data_validation` artifact: one row per GX expectation, the file accounting, and the
    exact duplicates that were dropped (each with the copy that was kept)."""

    success: bool  # every expectation passed, warnings included
    checks: list[SuiteCheck] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # received, kept, quarantined, duplicates
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    duplicates: list[Duplicate] = field(default_factory=list)
    fail_on_error: bool = True

    def failures(self, severity: Severity | None = None) -> list[SuiteCheck]:
        return [c for c in self.checks if not c.success and severity in (None, c.severity)]

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

    def failure_report(self, root: str = "") -> str:
        """The error message when the run stops: verdict, accounting and every failed check."""
        where = f" for {root}" if root else ""
        lines = [f"data validation {self.verdict()}{where}", f"  {self.accounting()}"]
        if self.quarantine_reasons:
            lines.append(f"  quarantine reasons: {self.quarantine_reasons}")
        lines += [f"  {c.line()}" for c in self.failures("error") + self.failures("warning")]
        return "\n".join(lines)

    def raise_for_errors(self, root: str = "") -> None:
        if self.stops_run:
            raise DataValidationError(self.failure_report(root))

    def to_dict(self) -> dict[str, Any]:
        """The suite.json artifact: plain JSON-safe values, `from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SuiteResult:
        return _ADAPTER.validate_python(data)

    def to_html(self) -> str:
        """A self-contained page (ZenML dashboard, MLflow artifact): verdict, accounting, each
        expectation with pass/fail, severity, observed value, threshold and the files it names."""
        colour = "#b00020" if self.failures("error") else "#b26a00" if self.failures("warning") else "#1b5e20"
        return render(
            "validation.html.j2",
            result=self,
            colour=colour,
            reasons=", ".join(f"{k}: {v}" for k, v in self.quarantine_reasons.items()) or "none",
            duplicates_shown=self.duplicates[:DUPLICATES_SHOWN],
        )


_ADAPTER = TypeAdapter(SuiteResult)


def plain(value: Any) -> Any:
    """GX observed values as JSON-safe Python (numpy scalars, NaN)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if np.isnan(value) else round(value, 4)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def short(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return f"[{shown}{', …' if len(items) > limit else ''}]"
