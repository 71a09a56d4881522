"""The GitHub Actions workflows: they cannot run here, so what can be checked locally is checked: they
parse, actionlint passes, every `make` target they call exists, and the guards that keep staging and
production safe (concurrency, the `production` environment, no team credentials during set-up) are there."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
# `make [-s] [VAR=value ...] TARGET`
MAKE_CALL = re.compile(r"(?<![\w/.-])make\s+(?:(?:-\S+|\w+=\S+)\s+)*([A-Za-z0-9_][\w.-]*)(?!\S*=)")
TEAM_CREDENTIALS = {"ZENML_STORE_URL", "ZENML_STORE_API_KEY", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_PASSWORD"}


def load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    if True in workflow:  # YAML 1.1 reads the key `on` as the boolean true
        workflow["on"] = workflow.pop(True)
    return workflow


def workflow_names() -> list[str]:
    return sorted(p.name for p in WORKFLOWS.glob("*.y*ml"))


def scripts(job: dict) -> list[str]:
    """The job's `run:` scripts, with the text of `.ci/run` where a step runs it."""
    out = []
    for step in job.get("steps", []):
        run = step.get("run", "")
        out.append(run + ("\n" + (ROOT / ".ci" / "run").read_text() if ".ci/run" in run else ""))
    return out


def make_targets_called(job: dict) -> set[str]:
    return {m.group(1) for script in scripts(job) for m in MAKE_CALL.finditer(script)}


def makefile_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"([^\s:=#][^:=#]*?)\s*::?(?!=)", line)  # `a b: deps`, not `A := x` nor a recipe line
        if match:
            targets.update(match.group(1).split())
    return targets


def test_make_call_pattern_reads_targets_not_flags_or_variables():
    script = 'make -s summary >> "$GITHUB_STEP_SUMMARY"\nmake promote-production VERSION="$V"\nmake CONFIG=x train'
    assert [m.group(1) for m in MAKE_CALL.finditer(script)] == ["summary", "promote-production", "train"]
    assert "lint" in makefile_targets() and "SHELL" not in makefile_targets()


@pytest.mark.parametrize("name", workflow_names())
def test_workflow_parses_and_every_job_has_steps(name):
    workflow = load(name)
    assert workflow["on"] and workflow["jobs"], name
    for job_name, job in workflow["jobs"].items():
        if "uses" in job:  # a call of a reusable workflow of this repository, which it must accept
            called = load(job["uses"].removeprefix("./.github/workflows/"))
            assert "workflow_call" in called["on"], f"{name}: {job_name} calls {job['uses']}"
            assert set(job.get("with", {})) <= set(called["on"]["workflow_call"]["inputs"]), f"{name}: {job_name}"
            continue
        assert job["runs-on"] == "ubuntu-latest" and job["steps"], f"{name}: {job_name}"


def test_every_make_target_a_workflow_calls_is_in_the_makefile():
    called = {
        (name, target)
        for name in workflow_names()
        for job in load(name)["jobs"].values()
        for target in make_targets_called(job)
    }
    assert {"ci.yml", "train.yml", "promote-production.yml"} <= {name for name, _ in called}
    missing = sorted(f"{name}: make {target}" for name, target in called if target not in makefile_targets())
    assert not missing, f"targets the workflows call that the Makefile lacks: {missing}"


def test_train_runs_on_data_config_and_code_changes_and_never_two_at_once():
    train = load("train.yml")
    push = train["on"]["push"]
    assert push["branches"] == ["main"] and "workflow_dispatch" in train["on"]
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    watched = {f"{package.rstrip('*')}/**" for package in packages}
    watched |= {"data/**", "dvc.yaml", "dvc.lock", "params.yaml", "configs/**", "requirements*", "pyproject.toml"}
    assert watched <= set(push["paths"]), watched - set(push["paths"])
    assert train["concurrency"] == {"group": "train-staging", "cancel-in-progress": False}
    job = train["jobs"]["train"]
    steps = {m: step for step in job["steps"] for m in MAKE_CALL.findall(step.get("run", ""))}
    assert "dvc pull" in "".join(scripts(job)) and {"setup", "data", "train", "summary"} <= set(steps)
    assert "$GITHUB_STEP_SUMMARY" in steps["summary"]["run"] and "!cancelled()" in steps["summary"]["if"]


def test_only_approved_jobs_move_production_and_one_at_a_time():
    promote = load("promote-production.yml")
    assert promote["on"]["release"] == {"types": ["published"]}
    inputs = promote["on"]["workflow_dispatch"]["inputs"]
    assert inputs["version"]["required"] is False
    assert inputs["action"]["type"] == "choice" and set(inputs["action"]["options"]) == {"promote", "rollback"}
    assert promote["concurrency"] == {"group": "production", "cancel-in-progress": False}
    movers = {}
    for name in workflow_names():
        for job_name, job in load(name)["jobs"].items():
            moves = make_targets_called(job) & {"promote-production", "rollback-production"}
            if moves:
                environment = job.get("environment")
                assert (environment if isinstance(environment, str) else (environment or {}).get("name")) == (
                    "production"
                ), f"{name}: job {job_name} runs {moves} without `environment: production`"
                movers[job_name] = (name, moves, job["if"])
    assert movers["promote"][:2] == ("promote-production.yml", {"promote-production"})
    assert movers["rollback"][:2] == ("promote-production.yml", {"rollback-production"})
    assert "workflow_dispatch" in movers["rollback"][2] and "rollback" in movers["rollback"][2]


def test_team_credentials_never_reach_make_setup():
    """`make setup` registers the runner's own local stack and MLflow experiment: with the team's
    credentials in its environment it would register them on the team's servers."""
    for name in workflow_names():
        workflow = load(name)
        assert not TEAM_CREDENTIALS & set(workflow.get("env", {})), name
        for job_name, job in workflow["jobs"].items():
            assert not TEAM_CREDENTIALS & set(job.get("env", {})), f"{name}: {job_name}"
            for step in job.get("steps", []):
                if "setup" in MAKE_CALL.findall(step.get("run", "")):
                    assert not TEAM_CREDENTIALS & set(step.get("env", {})), f"{name}: {job_name}: {step}"
            needs_team = [
                s for s in job.get("steps", []) if make_targets_called({"steps": [s]}) & {"train", "promote-production"}
            ]
            for step in needs_team:
                assert set(step["env"]) >= TEAM_CREDENTIALS, f"{name}: {job_name}: {step['run']}"


def actionlint() -> Path:
    found = Path(sys.executable).with_name("actionlint")
    if not found.exists():
        found = Path(shutil.which("actionlint") or found)
    assert found.exists(), "no actionlint next to this Python: `make setup` installs it (requirements.txt)"
    return found


def test_actionlint_passes_on_the_workflows():
    files = [str(WORKFLOWS / name) for name in workflow_names()]  # named: a copy without .git has no "project"
    done = subprocess.run([str(actionlint()), *files], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_finds_a_broken_workflow(tmp_path):
    """The check above can fail: a job that needs a job that does not exist is reported."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    needs: nothere\n    runs-on: ubuntu-latest\n    steps:\n      - run: 'true'\n"
    )
    done = subprocess.run([str(actionlint()), str(broken)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "nothere" in done.stdout, done.stdout + done.stderr


def test_retrain_runs_hourly_and_by_hand_shares_stagings_lock_and_never_moves_production():
    retrain = load("retrain.yml")
    on = retrain["on"]
    assert on["schedule"][0]["cron"].split()[1:] == ["*", "*", "*", "*"] and "workflow_dispatch" in on
    assert retrain["concurrency"] == {"group": "train-staging", "cancel-in-progress": False}
    (job,) = retrain["jobs"].values()
    text = "".join(scripts(job))
    assert "make monitor" in text and "promote-production" not in text and "rollback" not in text
    assert "environment" not in job, "no approval gate needed: nothing here touches production"


def test_each_stage_move_rolls_out_its_serving_image_on_kubernetes():
    """Staging after training, production after a promotion or a rollback: rollout.yml builds the baked
    image, points the stage's overlay at it, checks it as make lint does and applies it."""
    callers = {
        (name, job_name): (job["with"]["stage"], job["needs"])
        for name in workflow_names()
        for job_name, job in load(name)["jobs"].items()
        if job.get("uses") == "./.github/workflows/rollout.yml"
    }
    assert sorted(callers.values()) == [("production", "promote"), ("production", "rollback"), ("staging", "train")]
    promote = load("promote-production.yml")["jobs"]
    assert promote["rollout-promoted"]["with"]["version"] == "${{ needs.promote.outputs.version }}"
    assert all(
        load(name)["jobs"][job]["permissions"]["packages"] == "write"
        and load(name)["jobs"][job]["secrets"] == "inherit"
        for name, job in callers
    )
    (job,) = load("rollout.yml")["jobs"].values()
    text = "".join(scripts(job))
    assert "--target baked" in text and "docker push" in text and "imgclf fetch" in text
    assert "kustomize edit set image" in text and "infra/k8s_check.py" in text
    assert 'kubectl apply -k "deploy/k8s/overlays/$STAGE"' in text and "rollout status" in text
