"""What a promotion decided and did: the artifact both pipelines write, with its dashboard view."""

from __future__ import annotations

from dataclasses import dataclass

from imgclf.evaluate.comparison import ModelComparison
from imgclf.stages import StageMove


@dataclass
class PromotionRecord:
    model_name: str
    stage: str
    candidate_version: str
    holder_version: str | None  # the stage's holder when the decision was made (the move's expectation)
    champion: str  # what the candidate was compared with, e.g. "version 1 (@production)"; "" when nothing
    gate_passed: bool | None
    gate: str
    comparison: ModelComparison | None
    comparison_note: str
    allowed: bool
    reason: str
    moved: bool
    move: StageMove | None = None

    def summary(self) -> str:
        verb = "moved" if self.moved else "did not move"
        return f"{self.stage} {verb}: version {self.candidate_version} {self.reason}"

    def to_markdown(self) -> str:
        """The dashboard view and the GitHub job summary."""
        state = "moved" if self.moved else "not moved"
        lines = [
            f"## Promotion of {self.model_name} version {self.candidate_version} to {self.stage}: {state}",
            "",
            f"**Decision:** {self.reason}",
            "",
            "| | |",
            "|---|---|",
            f"| holder before | {_version(self.holder_version)} |",
            f"| compared with | {self.champion or 'nothing (no holder)'} |",
            f"| quality gate | {_gate(self.gate_passed)}: {self.gate or '-'} |",
        ]
        c = self.comparison
        if c is not None:
            lines += [
                f"| verdict | {c.verdict} |",
                f"| accuracy | {c.challenger_accuracy:.4f} vs {c.champion_accuracy:.4f} "
                f"(delta {c.accuracy_delta:+.4f}, {100 * c.level:g}% CI {c.accuracy_ci_low:+.4f} to "
                f"{c.accuracy_ci_high:+.4f}, p={c.accuracy_p_value:.3g}) |",
                f"| McNemar | champion-only correct {c.mcnemar_b}, candidate-only correct {c.mcnemar_c}, "
                f"p={c.mcnemar_p_value:.3g} |",
                f"| test images | {c.n_images} |",
            ]
        if self.move is not None:
            m = self.move
            lines += [
                f"| move | #{m.seq} {m.kind}: {_version(m.from_version)} -> {_version(m.to_version)} |",
                f"| when, by | {m.at}, {m.by} |",
                f"| commit | {m.commit or '-'} |",
                f"| data version | {m.data_version or '-'} (manifest {m.data_hash[:12] or '-'}) |",
            ]
        if self.comparison_note:
            lines += ["", self.comparison_note]
        return "\n".join(lines) + "\n"


def _version(v: str | None) -> str:
    return f"version {v}" if v else "nobody"


def _gate(passed: bool | None) -> str:
    return {True: "passed", False: "FAILED", None: "not recorded"}[passed]
