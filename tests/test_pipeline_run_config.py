"""pipelines._run.run_with_config: the one way the runners (promotion, the retraining monitoring starts)
give a pipeline its YAML config with some parameters replaced."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipelines._run import run_with_config


class Recording:
    """Stands in for a ZenML pipeline: keeps the config file it was run with, as ZenML would read it."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.config: dict | None = None

    def with_options(self, config_path: str):
        def run() -> str:
            self.path = Path(config_path)
            self.config = yaml.safe_load(self.path.read_text())
            return "the run"

        return run


def test_parameters_replace_the_configs_in_a_copy_and_the_file_stays_as_it_was(tmp_path):
    path = tmp_path / "promote.yaml"
    original = {"enable_cache": False, "parameters": {"model_name": "m", "version": ""}, "steps": {"deploy": {}}}
    path.write_text(yaml.safe_dump(original))
    text = path.read_text()
    pipeline = Recording()
    assert run_with_config(pipeline, path, version="7") == "the run"
    assert pipeline.config == {**original, "parameters": {"model_name": "m", "version": "7"}}
    assert pipeline.path != path and not pipeline.path.exists(), "the copy is gone once the run returns"
    assert path.read_text() == text


def test_a_parameter_is_added_to_a_config_without_parameters_and_none_leaves_it_as_it_is(tmp_path):
    path = tmp_path / "training.yaml"
    original = {"model": {"name": "m"}, "steps": {"train": {"parameters": {"config": {"epochs": 1}}}}}
    path.write_text(yaml.safe_dump(original))
    pipeline = Recording()
    run_with_config(pipeline, str(path), data_source="/data/digits")
    assert pipeline.config == {**original, "parameters": {"data_source": "/data/digits"}}
    run_with_config(pipeline, path)
    assert pipeline.config == original
