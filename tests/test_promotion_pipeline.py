"""The life of a model on the real local stack (ZenML + MLflow SQLite, no mocks of either): v1 trains and
takes staging, goes to production; v2 (clearly worse: trained with a learning rate too small to learn)
is refused staging with the verdict in its record; v3 takes staging; a promotion expecting the wrong
holder and one of a version that never held staging are refused; v3 goes to production; rolling back
production restores v1. After every step the MLflow aliases and ZenML's stages agree, and the staging
and production services answer with the version that holds their stage."""

from __future__ import annotations

import shutil

import mlflow
import pytest
import requests
import yaml

from conftest import ROOT, SESSION_MLFLOW_URI, fast_pipeline_run, free_port

pytestmark = pytest.mark.integration

NAME = "lifecycle-classifier"


@pytest.fixture(scope="module")
def life(digits_dir, tmp_path_factory):
    """Trains v1..v3 on demand; stops every service it started."""
    data = tmp_path_factory.mktemp("life") / "digits"
    shutil.copytree(digits_dir, data)
    ports = {"staging": free_port(), "production": free_port()}
    runs = []

    def train(seed: int, lr: float) -> object:
        def edit(config: dict) -> None:
            config["model"]["name"] = NAME
            train_step = config["steps"]["train"]["parameters"]
            del train_step["distill_into"], train_step["prune"]
            train_step["config"].update(epochs=8, seed=seed, lr=lr)
            config["steps"]["deploy"]["parameters"]["config"]["port"] = ports["staging"]

        with fast_pipeline_run(data, tmp_path_factory.mktemp("config"), edit, stop_service=False) as run:
            runs.append(run)
            return run

    yield train, ports, tmp_path_factory.mktemp("promote")
    from imgclf.serving.deployment import stop_recorded

    for port in ports.values():
        stop_recorded(port)


def record_of(run):
    return run.steps["promote"].outputs["promotion_record"][0].load()


def served_version(port: int, digits_dir) -> str:
    image = next((digits_dir / "3").iterdir()).read_bytes()
    response = requests.post(
        f"http://127.0.0.1:{port}/predict", files={"image": ("3.png", image, "image/png")}, timeout=30
    )
    assert response.status_code == 200
    return response.json()["model_version"]


def holders_agree() -> dict[str, str | None]:
    from imgclf.registry import stage_disagreements, stage_holders

    assert stage_disagreements(NAME, SESSION_MLFLOW_URI) == []  # ZenML's stages = the MLflow aliases
    return stage_holders(NAME, SESSION_MLFLOW_URI)


def promote_production(version: str, port: int, folder) -> int:
    from pipelines.promotion import main

    config = yaml.safe_load((ROOT / "configs" / "promote_production.yaml").read_text())
    config["parameters"]["model_name"] = NAME
    config["steps"]["deploy"]["parameters"]["config"]["port"] = port
    path = folder / f"promote-{version}.yaml"
    path.write_text(yaml.safe_dump(config))
    return main(["--version", version, "-c", str(path)])


def cli(*args: str) -> int:
    from imgclf.cli import main

    mlflow.set_tracking_uri(SESSION_MLFLOW_URI)  # ZenML's tracker unsets it after a step
    try:
        return main([*args, "--model-name", NAME])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def test_the_life_of_a_model_from_training_to_production_and_back(life, digits_dir, monkeypatch, capsys):
    train, ports, folder = life
    monkeypatch.setenv("MLFLOW_TRACKING_URI", SESSION_MLFLOW_URI)

    v1 = record_of(train(seed=1, lr=3e-3))
    assert v1.moved and v1.holder_version is None and v1.champion == ""  # nothing held staging or production
    assert holders_agree() == {"staging": v1.candidate_version, "production": None}
    assert served_version(ports["staging"], digits_dir) == v1.candidate_version

    assert promote_production(v1.candidate_version, ports["production"], folder) == 0
    assert holders_agree() == {"staging": None, "production": v1.candidate_version}
    assert served_version(ports["production"], digits_dir) == v1.candidate_version

    v2 = record_of(train(seed=2, lr=1e-7))
    assert not v2.moved and v2.gate_passed  # the gate (min_accuracy 0) passed: the comparison refused it
    assert v2.comparison is not None and v2.comparison.verdict == "challenger worse"
    assert v2.reason.startswith("refused staging: significantly worse than") and "(@production)" in v2.champion
    tags = mlflow.MlflowClient(SESSION_MLFLOW_URI).get_model_version(NAME, v2.candidate_version).tags
    assert "refused staging: significantly worse" in tags["imgclf.promotion.staging"]
    assert holders_agree() == {"staging": None, "production": v1.candidate_version}
    assert served_version(ports["staging"], digits_dir) == v1.candidate_version  # the staging service kept v1

    v3 = record_of(train(seed=3, lr=3e-3))
    assert v3.moved and ("no significant difference" in v3.reason or "challenger better" in v3.reason)
    assert holders_agree() == {"staging": v3.candidate_version, "production": v1.candidate_version}
    assert served_version(ports["staging"], digits_dir) == v3.candidate_version

    capsys.readouterr()
    assert cli("promote", v3.candidate_version, "--to", "production", "--expect", v2.candidate_version) == 1
    assert f"production is held by version {v1.candidate_version}, not by version {v2.candidate_version}" in (
        capsys.readouterr().out
    )
    assert cli("promote", v2.candidate_version, "--to", "production") == 1
    assert "only the version that holds staging can be promoted to production" in capsys.readouterr().out
    assert holders_agree() == {"staging": v3.candidate_version, "production": v1.candidate_version}

    assert promote_production(v3.candidate_version, ports["production"], folder) == 0
    assert holders_agree() == {"staging": None, "production": v3.candidate_version}
    assert served_version(ports["production"], digits_dir) == v3.candidate_version

    assert cli("rollback", "production") == 0
    assert holders_agree() == {"staging": None, "production": v1.candidate_version}
    assert served_version(ports["production"], digits_dir) == v1.candidate_version

    capsys.readouterr()
    assert cli("stages") == 0
    table = capsys.readouterr().out
    assert f"| production | {v1.candidate_version} |" in table and "ZenML's stages agree." in table
    assert cli("summary", "--markdown") == 0  # what train.yml puts in its job summary
    summary = capsys.readouterr().out
    assert summary.startswith(f"## {NAME} version {v3.candidate_version}")
    assert f"| promotion.staging | staging moved: version {v3.candidate_version} takes staging" in summary
    assert table in summary
