"""Stage moves in a real MLflow registry (SQLite): compare-and-set, the rules of who may hold a stage,
the audit record on the version, rollback from the audit trail, and one winner among concurrent moves.
ZenML is left out here (`mirrors=[]`); tests/test_promotion_pipeline.py runs the whole life with it."""

from __future__ import annotations

import threading

import mlflow
import pytest

from imgclf.registry import move_stage, rollback_stage, stage_history, stage_holders
from imgclf.stages import StageConflict

NAME = "stage-test"


@pytest.fixture()
def versions(mlflow_uri, monkeypatch):
    """Four registered versions (placeholders: the rules read only tags) with data provenance tags."""
    monkeypatch.setenv("GITHUB_ACTOR", "octocat")
    client = mlflow.MlflowClient()
    client.create_registered_model(NAME)
    for i in range(1, 5):
        client.create_model_version(
            NAME, f"file:///nowhere/{i}", tags={"dvc_data": f"data/digits@md5:{i}", "data_hash": f"{i}" * 16}
        )
    return mlflow_uri


def move(stage, version, expect, kind="promote"):
    return move_stage(NAME, stage, version, expect=expect, reason=f"test {kind}", kind=kind, mirrors=[])


def test_moves_are_compare_and_set_and_recorded_on_the_version(versions):
    first = move("staging", "1", None)
    assert stage_holders(NAME) == {"staging": "1", "production": None}
    assert (first.from_version, first.to_version, first.by, first.data_version) == (
        None,
        "1",
        "octocat",
        "data/digits@md5:1",
    )
    tag = mlflow.MlflowClient().get_model_version(NAME, "1").tags[first.tag]
    assert '"reason": "test promote"' in tag and first.commit in tag and first.at in tag

    with pytest.raises(StageConflict, match="staging is held by version 1, not by nobody"):
        move("staging", "2", None)
    with pytest.raises(StageConflict, match="staging is held by version 1, not by version 3"):
        move("staging", "2", "3")
    with pytest.raises(StageConflict, match="only the version that holds staging can be promoted to production"):
        move("production", "2", None)
    assert stage_holders(NAME) == {"staging": "1", "production": None}  # refusals changed nothing

    move("production", "1", None)  # it leaves staging, as a ZenML stage does
    assert stage_holders(NAME) == {"staging": None, "production": "1"}
    assert [(m.stage, m.kind, m.from_version, m.to_version) for m in stage_history(NAME)] == [
        ("staging", "promote", None, "1"),
        ("production", "promote", None, "1"),
        ("staging", "vacate", "1", None),
    ]
    with pytest.raises(StageConflict, match="version 1 holds production"):
        move("staging", "1", None)
    with pytest.raises(LookupError, match="has no version '9'"):
        move("staging", "9", None)
    with pytest.raises(ValueError, match="unknown stage 'prod'"):
        move("prod", "1", None)


def test_rollback_walks_back_the_audit_trail_one_holder_at_a_time(versions):
    for version, expect in (("1", None), ("2", "1")):  # 1 then 2 to production, through staging
        move("staging", version, None)
        move("production", version, expect)
    move("staging", "3", None)
    move("production", "3", "2")
    assert stage_holders(NAME)["production"] == "3"

    back = rollback_stage(NAME, "production", mirrors=[])
    assert (back.kind, back.from_version, back.to_version) == ("rollback", "3", "2")
    assert rollback_stage(NAME, "production", mirrors=[]).to_version == "1"  # a second one goes further back
    with pytest.raises(StageConflict, match="version 1 was the first to hold production"):
        rollback_stage(NAME, "production", mirrors=[])
    assert stage_holders(NAME) == {"staging": None, "production": "1"}
    with pytest.raises(StageConflict, match="staging of stage-test is empty since version 3 went on to production"):
        rollback_stage(NAME, "staging", mirrors=[])

    move("staging", "4", None)
    move("staging", "2", "4")  # a newer candidate replaces the staging holder
    assert rollback_stage(NAME, "staging", mirrors=[]).to_version == "4"
    move("production", "4", "1")
    assert rollback_stage(NAME, "production", mirrors=[]).to_version == "1"  # the trail goes on after rollbacks


def test_concurrent_moves_of_one_stage_leave_exactly_one_winner(versions):
    barrier = threading.Barrier(3)
    outcomes: dict[str, str] = {}

    def contend(version: str) -> None:
        barrier.wait()
        try:
            move("staging", version, None)
            outcomes[version] = "won"
        except StageConflict as exc:
            outcomes[version] = str(exc)

    threads = [threading.Thread(target=contend, args=(v,)) for v in ("1", "2", "3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    winners = [v for v, outcome in outcomes.items() if outcome == "won"]
    assert len(outcomes) == 3 and len(winners) == 1
    assert stage_holders(NAME)["staging"] == winners[0]
    assert all(f"held by version {winners[0]}, not by nobody" in o for v, o in outcomes.items() if v != winners[0])
    assert len(stage_history(NAME)) == 1  # the losers recorded nothing


def test_serve_defaults_to_production_else_staging_else_the_latest(versions):
    from imgclf.commands.serve import default_model

    assert default_model(NAME) == (f"models:/{NAME}/latest", "no version holds staging or production; the latest is 4")
    move("staging", "2", None)
    assert default_model(NAME) == (f"models:/{NAME}@staging", "staging is version 2")
    move("production", "2", None)
    move("staging", "3", None)
    assert default_model(NAME) == (f"models:/{NAME}@production", "production is version 2")


def test_promote_names_a_version_that_does_not_exist(versions):
    from imgclf.cli import main

    with pytest.raises(SystemExit, match=f"{NAME} has no version 'latest' in the MLflow registry"):
        main(["promote", "latest", "--to", "production", "--model-name", NAME])  # never "latest"


class ListMirror:
    """A second view of the stages kept in a dict (what ZenML is in production); `fail` makes it refuse."""

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.seen, self.recorded = fail, {"staging": None, "production": None}, []

    def sync(self, name, holders, moves):
        if self.fail:
            raise ConnectionError("the ZenML server did not answer")
        self.seen = {stage: info.version if info else None for stage, info in holders.items()}
        self.recorded += [m.seq for m in moves]

    def holders(self, name):
        return dict(self.seen)


def test_a_mirror_follows_each_move_and_a_failed_one_is_named_and_repaired(versions):
    from imgclf.registry import stage_disagreements, sync_stage_mirrors
    from imgclf.stages import StageSyncError

    mirror = ListMirror()
    move_stage(NAME, "staging", "1", expect=None, reason="t", mirrors=[mirror])
    move_stage(NAME, "production", "1", expect=None, reason="t", mirrors=[mirror])
    assert mirror.seen == {"staging": None, "production": "1"} and mirror.recorded == [1, 2, 3]  # 3: the vacate
    assert stage_disagreements(NAME, mirrors=[mirror]) == []

    broken = ListMirror(fail=True)
    with pytest.raises(StageSyncError, match=r"ListMirror did not follow .*imgclf stages --sync") as failed:
        move_stage(NAME, "staging", "2", expect=None, reason="t", mirrors=[broken])
    assert [m.to_version for m in failed.value.moves] == ["2"]  # the move MLflow made, for the caller's record
    assert stage_holders(NAME)["staging"] == "2"
    assert stage_disagreements(NAME, mirrors=[mirror]) == ["ListMirror: staging is version None, MLflow says 2"]
    sync_stage_mirrors(NAME, mirrors=[mirror])
    assert stage_disagreements(NAME, mirrors=[mirror]) == []


def test_the_training_pipelines_promotion_obeys_allow_incomparable(versions):
    """evaluate saw a staging holder it could not compare with (other classes): refused by default; with
    allow_incomparable the move expects that holder, so the compare-and-set lets it through."""
    import numpy as np

    from imgclf.evaluate.gate import GateResult
    from imgclf.evaluate.metrics import evaluate_probabilities
    from imgclf.promotion.promote import promote_evaluated
    from imgclf.promotion.rules import PromotionRules

    move("staging", "1", None)
    report = evaluate_probabilities(np.array([0, 1, 1, 0]), np.eye(2)[[0, 1, 1, 0]], ["a", "b"], n_bootstrap=10)
    report.champion_version, report.champion_alias = "1", "staging"  # found, not comparable: no comparison
    refused = promote_evaluated(NAME, "2", report, GateResult(passed=True), PromotionRules())
    assert not refused.moved and "models:/stage-test/1 (@staging) holds it and could not be compared" in refused.reason
    taken = promote_evaluated(NAME, "2", report, GateResult(passed=True), PromotionRules(allow_incomparable=True))
    assert taken.moved and taken.move.from_version == "1" and "allow_incomparable is set" in taken.reason
    tags = mlflow.MlflowClient().get_model_version(NAME, "2").tags
    assert tags["imgclf.promotion.staging"] == taken.summary()
