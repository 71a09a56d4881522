"""Run a pipeline from a YAML run config with some of its parameters replaced.

ZenML takes a run's whole configuration as one file, and a parameter given both in code and in that file
is a conflict, so the overrides go into a copy of the config in a temporary folder."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any


def run_with_config(pipeline, config_path: str | Path, **parameters: Any):
    """`pipeline` run with the config at `config_path`, its top-level `parameters` updated with
    `parameters` (none given: the config as it is). The file itself is left unchanged. Returns the run."""
    import yaml

    config = yaml.safe_load(Path(config_path).read_text()) or {}
    if parameters:
        config.setdefault("parameters", {}).update(parameters)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / Path(config_path).name
        copy.write_text(yaml.safe_dump(config))
        return pipeline.with_options(config_path=str(copy))()
