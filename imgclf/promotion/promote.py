"""Promotions: apply the rules to a candidate and move the stage compare-and-set, returning the record.

`promote_evaluated` is the training pipeline's (its evaluate step already compared the candidate with the
champion); `promote_version` is everyone else's (CLI, promotion pipeline, CI): it scores again."""

from __future__ import annotations

from pathlib import Path

from imgclf.evaluate.champion import champion_label
from imgclf.evaluate.gate import GateResult
from imgclf.evaluate.metrics import EvaluationReport
from imgclf.promotion.record import PromotionRecord
from imgclf.promotion.rules import PromotionRules, decide
from imgclf.promotion.scoring import score_pair
from imgclf.registry import existing_version, move_stage, set_version_tag, stage_holders
from imgclf.stages import (
    DECISION_TAG,
    GATE_PASSED_TAG,
    GATE_TAG,
    StageConflict,
    StageSyncError,
    check_move,
    check_stage_name,
)

CURRENT = "current"  # `expect` default: whoever holds the stage when the promotion starts


def promote_evaluated(
    name: str,
    version: str,
    report: EvaluationReport,
    gate: GateResult,
    rules: PromotionRules,
    stage: str = "staging",
    tracking_uri: str | None = None,
) -> PromotionRecord:
    """Promote a version its training run has just evaluated against the champion; the move expects the
    stage's holder at evaluation time (another training that took the stage since wins)."""
    check_stage_name(stage)
    expect = report.champion_version if report.champion_alias == stage else None
    if report.champion_version:
        champion = champion_label(name, report.champion_version, report.champion_alias)
    else:  # evaluate found none: is there a holder now (one that could not be loaded, or a newcomer)?
        holders = stage_holders(name, tracking_uri)
        alias = _champion_alias(holders, stage)
        champion = champion_label(name, holders[alias], alias) if alias else ""
    decision = decide(rules, stage, gate.passed, gate.explain(), report.comparison, champion)
    record = PromotionRecord(
        name, stage, str(version), expect, champion, gate.passed, gate.explain(), report.comparison,
        report.comparison_note, decision.allowed, decision.reason, moved=False,
    )  # fmt: skip
    return _apply(record, expect, tracking_uri)


def promote_version(
    name: str,
    version: str,
    stage: str,
    rules: PromotionRules,
    expect: str | None = CURRENT,
    tracking_uri: str | None = None,
    data_root: str | Path | None = None,
) -> PromotionRecord:
    """Score `version` and the stage's champion on `version`'s test images, decide, move. `expect`: the
    holder the caller saw (None: nobody); by default whoever holds the stage now."""
    check_stage_name(stage)
    version = str(version)
    tags = existing_version(name, version, tracking_uri).tags
    gate_passed = {"true": True, "false": False}.get(tags.get(GATE_PASSED_TAG, "").lower())
    holders = stage_holders(name, tracking_uri)
    holder = holders[stage]
    record = PromotionRecord(
        name, stage, version, holder, "", gate_passed, tags.get(GATE_TAG, ""), None, "", False, "", moved=False
    )
    try:
        check_move(stage, version, holder if expect == CURRENT else expect, holders, "promote")
    except StageConflict as exc:
        record.reason = f"refused {stage}: {exc}"
        return _apply(record, holder, tracking_uri)
    alias = _champion_alias(holders, stage)
    if alias is not None:
        record.champion = champion_label(name, holders[alias], alias)
        record.comparison, record.comparison_note = score_pair(
            name, version, holders[alias], alias, rules, tracking_uri, data_root
        )
    decision = decide(rules, stage, gate_passed, record.gate, record.comparison, record.champion)
    record.allowed, record.reason = decision.allowed, decision.reason
    return _apply(record, holder, tracking_uri)


def _champion_alias(holders: dict[str, str | None], stage: str) -> str | None:
    """The stage whose holder a candidate for `stage` must not be worse than: its own holder, else production's."""
    return next((alias for alias in (stage, "production") if holders.get(alias)), None)


def _apply(record: PromotionRecord, expect: str | None, tracking_uri: str | None) -> PromotionRecord:
    """Move the stage when the decision allows it (a compare-and-set refusal becomes the record's reason),
    and tag the version with the outcome, so the MLflow UI shows refusals too."""
    _move(record, expect, tracking_uri)
    name, version = record.model_name, record.candidate_version
    set_version_tag(name, version, DECISION_TAG + record.stage, record.summary(), tracking_uri)
    return record


def _move(record: PromotionRecord, expect: str | None, tracking_uri: str | None) -> None:
    """A refusal of the compare-and-set is the record's reason; a mirror that did not follow a move
    MLflow made is a warning on a moved record (the registry is the truth; `imgclf stages --sync`)."""
    if not record.allowed:
        return
    why = "; ".join(p for p in (record.reason, f"gate: {record.gate}", record.comparison_note) if p)
    try:
        record.move = move_stage(
            record.model_name, record.stage, record.candidate_version, expect=expect, reason=why,
            tracking_uri=tracking_uri,
        )  # fmt: skip
    except StageConflict as exc:
        record.allowed, record.reason = False, f"refused {record.stage}: {exc}"
        return
    except StageSyncError as exc:
        record.move, record.reason = exc.moves[0], f"{record.reason}; WARNING: {exc}"
    record.moved = True
