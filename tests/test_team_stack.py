"""The team stack with real servers (infra/team_stack.py: PostgreSQL, an MLflow server with basic auth,
a ZenML server): started by the test on free loopback ports in its own state folder, the fast training
config run against it, and what the run left checked through the servers' own HTTP APIs, not files.
Everything runs in subprocesses, as a user's shell would, so the servers and the ZenML client
connection never touch this test session's stores."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
HAS_POSTGRES = any(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or shutil.which("initdb") is not None


def _run(command: list[str], env: dict, cwd: Path, timeout: int = 600) -> str:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{command[:4]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _get(url: str, auth: tuple[str, str] | None = None, body: dict | None = None) -> dict:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def team(digits_dir):
    """The stack up, the fast config trained on it; (env, work folder, credentials); down afterwards."""
    # not under pytest's 0700 temporary folders: as root the database runs as `postgres`, which must reach it
    work = Path(tempfile.mkdtemp(prefix="imgclf-team-"))
    os.chmod(work, 0o755)
    state = work / "state"
    ports = {name: str(free_port()) for name in ("PG", "MLFLOW", "ZENML")}
    env = {
        **os.environ,
        "IMGCLF_STATE": str(state),
        "ZENML_CONFIG_PATH": str(state / "zenml"),
        "IMGCLF_CACHE_DIR": str(state / "cache"),
        "PYTHONPATH": str(ROOT),
        **{f"IMGCLF_TEAM_{name}_PORT": port for name, port in ports.items()},
    }
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "ZENML_STORE_URL"):
        env.pop(name, None)
    python = sys.executable
    try:
        _run([python, str(ROOT / "infra" / "team_stack.py"), "up"], env, work)
        _run([python, str(ROOT / "infra" / "team_stack.py"), "up"], env, work)  # twice is harmless
        shell = dict(
            line.removeprefix("export ").split("=", 1)
            for line in (state / "team" / "env.sh").read_text().splitlines()
            if line.startswith("export ")
        )
        env = {**env, **shell}
        shutil.copytree(digits_dir, work / "data" / "digits")
        config = yaml.safe_load((ROOT / "configs" / "training_fast.yaml").read_text())
        train = config["steps"]["train"]["parameters"]
        train.pop("distill_into"), train.pop("prune")  # the servers are under test here, not compression
        config["steps"]["deploy"]["parameters"]["config"]["port"] = free_port()
        (work / "fast.yaml").write_text(yaml.safe_dump(config))
        zenml = str(Path(python).with_name("zenml"))
        _run([zenml, "pipeline", "run", "pipelines.training_pipeline", "-c", str(work / "fast.yaml")], env, work)
        yield env, work, (shell["MLFLOW_TRACKING_USERNAME"], shell["MLFLOW_TRACKING_PASSWORD"])
    finally:
        for record in (state / "deployments").glob("*.json") if (state / "deployments").exists() else []:
            pid = json.loads(record.read_text()).get("pid")
            if pid:
                subprocess.run(["kill", str(pid)], check=False)
        subprocess.run([python, str(ROOT / "infra" / "team_stack.py"), "down"], env=env, cwd=work, timeout=300)
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.skipif(not HAS_POSTGRES, reason="PostgreSQL is not installed (apt-get install postgresql)")
def test_the_run_its_metrics_the_version_and_its_alias_are_on_the_servers(team):
    env, work, auth = team
    mlflow = env["MLFLOW_TRACKING_URI"]
    model = _get(f"{mlflow}/api/2.0/mlflow/registered-models/get?name=image-classifier", auth)["registered_model"]
    assert {"alias": "staging", "version": "1"} in model["aliases"]
    version = _get(f"{mlflow}/api/2.0/mlflow/model-versions/get?name=image-classifier&version=1", auth)
    run_id = version["model_version"]["run_id"]
    run = _get(f"{mlflow}/api/2.0/mlflow/runs/get?run_id={run_id}", auth)["run"]
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert run["info"]["status"] == "FINISHED" and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert {"train_loss", "train_images"} <= set(metrics)
    # a promotion command, unchanged, against the server's registry (the pipeline's deploy step served from it)
    imgclf = str(Path(sys.executable).with_name("imgclf"))
    _run([imgclf, "promote", "1", "--to", "production", "--data-root", str(work / "data" / "digits")], env, work)
    model = _get(f"{mlflow}/api/2.0/mlflow/registered-models/get?name=image-classifier", auth)["registered_model"]
    assert {"alias": "production", "version": "1"} in model["aliases"]
    with pytest.raises(urllib.error.HTTPError) as refused:  # the MLflow server wants its users' passwords
        _get(f"{mlflow}/api/2.0/mlflow/registered-models/get?name=image-classifier")
    assert refused.value.code == 401

    zenml = f"http://127.0.0.1:{env['IMGCLF_TEAM_ZENML_PORT']}"
    runs = _get(f"{zenml}/api/v1/runs?size=10")["items"]
    assert [r["body"]["status"] for r in runs] == ["completed"] and runs[0]["name"].startswith("training_pipeline")
    stacks = {s["name"] for s in _get(f"{zenml}/api/v1/stacks?size=50")["items"]}
    assert "imgclf-team" in stacks
    with urllib.request.urlopen(zenml, timeout=30) as page:  # the dashboard
        assert page.status == 200 and b"<html" in page.read(2000).lower()
    assert oct((work / "state" / "team" / "env.sh").stat().st_mode & 0o777) == "0o600"  # it holds a password


@pytest.mark.skipif(not HAS_POSTGRES, reason="PostgreSQL is not installed (apt-get install postgresql)")
def test_down_stops_every_server_and_keeps_the_data(team):
    env, work, _ = team
    python = sys.executable
    _run([python, str(ROOT / "infra" / "team_stack.py"), "down"], env, work)
    done = subprocess.run(
        [python, str(ROOT / "infra" / "team_stack.py"), "status"], env=env, cwd=work, capture_output=True, text=True
    )
    assert done.returncode == 1 and done.stdout.split() == ["postgres:", "down", "mlflow:", "down", "zenml:", "down"]
    assert (work / "state" / "team" / "postgres" / "PG_VERSION").exists()  # the database stays for the next up
