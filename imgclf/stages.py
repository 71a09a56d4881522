"""The rules of stage moves, apart from where they are stored: the stages, the audit record of one move,
which moves are allowed, and which move gave a stage its holder (what a rollback undoes).
`imgclf.registry.move_stage` applies them to MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from imgclf import provenance

STAGES = ("staging", "production")
MOVE_TAG = "imgclf.stage_move."  # + the move's 6-digit sequence number; the value is the StageMove as JSON
# version tags the register step writes and the audit record reads
DATA_VERSION_TAG = "dvc_data"
DATA_HASH_TAG = "data_hash"
COMMIT_TAG = "git_commit"
ZENML_VERSION_TAG = "zenml_model_version"
GATE_PASSED_TAG = "quality_gate_passed"  # "true" / "false"
GATE_TAG = "quality_gate"  # the gate's figures, as text
DECISION_TAG = "imgclf.promotion."  # + stage: the last promotion decision about a version, moved or not


class StageConflict(RuntimeError):
    """A stage move refused: the stage is not held by the version the caller expected, or a rule forbids it."""


class StageSyncError(RuntimeError):
    """MLflow moved the stage but a mirror (ZenML) did not follow; `imgclf stages --sync` repairs it."""

    def __init__(self, message: str, moves: list[StageMove] | None = None) -> None:
        super().__init__(message)
        self.moves = moves or []  # the moves MLflow made


@dataclass(frozen=True)
class StageMove:
    """One move of a stage, recorded on the version it concerns: the audit trail rollbacks read."""

    seq: int  # order of the moves of one registered model
    stage: str
    kind: str  # "promote" | "rollback" | "vacate" (staging emptied: its holder went to production)
    from_version: str | None
    to_version: str | None  # None: the stage is empty after this move
    at: str  # UTC, ISO 8601
    by: str  # $GITHUB_ACTOR or the OS user
    reason: str  # gate figures and comparison verdict, or why a person moved it
    commit: str  # the code that made the move
    data_version: str  # DVC's hash of the version's data folder
    data_hash: str  # the version's manifest content hash

    @property
    def tag(self) -> str:
        return f"{MOVE_TAG}{self.seq:06d}"


def check_stage_name(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: the stages are {', '.join(STAGES)}")


def check_move(stage: str, version: str, expect: str | None, holders: dict[str, str | None], kind: str) -> None:
    def holder(v: str | None) -> str:
        return f"version {v}" if v else "nobody"

    if holders[stage] != (str(expect) if expect is not None else None):
        raise StageConflict(
            f"{stage} is held by {holder(holders[stage])}, not by {holder(expect)} as this move expected: "
            "another move happened in between; check `imgclf stages` and decide again"
        )
    if holders[stage] == version:
        raise StageConflict(f"version {version} already holds {stage}")
    if stage == "production" and kind == "promote" and holders["staging"] != version:
        raise StageConflict(
            f"only the version that holds staging can be promoted to production, and staging is held by "
            f"{holder(holders['staging'])}, not version {version}"
        )
    if stage == "staging" and holders["production"] == version:
        raise StageConflict(f"version {version} holds production; a version holds one stage at a time")


def new_move(
    seq: int, stage: str, kind: str, from_v: str | None, to_v: str | None, reason: str, tags: dict[str, str]
) -> StageMove:
    return StageMove(
        seq=seq,
        stage=stage,
        kind=kind,
        from_version=from_v,
        to_version=to_v,
        at=datetime.now(UTC).isoformat(timespec="seconds"),
        by=provenance.actor(),
        reason=reason,
        commit=provenance.git_commit(),
        data_version=tags.get(DATA_VERSION_TAG, ""),
        data_hash=tags.get(DATA_HASH_TAG, ""),
    )


def current_move(history: list[StageMove], stage: str) -> StageMove | None:
    """The move that gave `stage` its current holder: moves stack up, each rollback takes one off."""
    stack: list[StageMove] = []
    for move in history:
        if move.stage != stage:
            continue
        if move.kind == "rollback":
            if stack:
                stack.pop()
        else:
            stack.append(move)
    return stack[-1] if stack else None
