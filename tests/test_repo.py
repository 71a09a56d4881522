"""The repository's own wiring: what its config files name must exist (nothing else runs `dvc repro` in CI)."""

from __future__ import annotations

import importlib
import tomllib

import yaml

from conftest import ROOT


def test_dvc_stage_dependencies_exist():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for dep in stage.get("deps", []):
            assert (ROOT / dep).exists(), f"dvc.yaml stage {name!r} depends on {dep}, which does not exist"


def test_console_script_points_at_a_function():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), f"{name} = {target}"
