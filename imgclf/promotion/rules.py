"""The promotion rules: when a candidate may take a stage from its current holder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from imgclf.evaluate.comparison import ModelComparison


class PromotionRules(BaseModel):
    """What a candidate must show. The comparison is the paired test of `imgclf.evaluate.comparison`
    (bootstrap CI of the accuracy delta and McNemar), on the candidate's own test images."""

    model_config = ConfigDict(extra="forbid")

    require: Literal["not_worse", "better"] = Field(
        "not_worse", description="not significantly worse than the champion, or significantly better"
    )
    require_gate: bool = Field(True, description="the candidate passed its quality gate")
    allow_incomparable: bool = Field(
        False, description="take the stage when a champion exists but cannot be compared (e.g. other classes)"
    )
    n_bootstrap: int = Field(1000, ge=100, description="paired-bootstrap resamples when a promotion scores again")
    seed: int = 0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


def decide(
    rules: PromotionRules,
    stage: str,
    gate_passed: bool | None,
    gate: str,
    comparison: ModelComparison | None,
    champion: str,
) -> Decision:
    """Apply `rules`. `champion` names what the candidate was compared with ("" when nothing was there)."""
    if rules.require_gate and gate_passed is not True:
        why = "its quality gate failed" if gate_passed is False else "its quality gate was not recorded"
        return Decision(False, f"refused {stage}: {why} ({gate or 'no gate figures'})")
    if comparison is None:
        if not champion:
            return Decision(True, f"takes {stage}: passed its gate, and there was no holder to compare it with")
        if not rules.allow_incomparable:
            return Decision(False, f"refused {stage}: {champion} holds it and could not be compared with the candidate")
        return Decision(True, f"takes {stage}: {champion} could not be compared, and allow_incomparable is set")
    if comparison.verdict == "challenger worse":
        return Decision(False, f"refused {stage}: significantly worse than {champion} ({comparison.verdict})")
    if rules.require == "better" and comparison.verdict != "challenger better":
        return Decision(False, f"refused {stage}: not significantly better than {champion} ({comparison.verdict})")
    return Decision(True, f"takes {stage}: {comparison.verdict} against {champion}")
