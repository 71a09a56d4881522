"""The pipelines run on a stack that can run them, even after the active stack was switched away."""

from __future__ import annotations

import runpy

import pytest

from conftest import ROOT

pytestmark = pytest.mark.integration


def test_a_stack_without_experiment_tracker_gives_way_to_the_projects():
    from zenml.client import Client

    from pipelines.stack import PROJECT_STACK, ensure_runnable_stack

    runpy.run_path(str(ROOT / "infra" / "local_stack.py"))["ensure_local_stack"]()
    client = Client()
    assert ensure_runnable_stack() == PROJECT_STACK  # already fine: nothing changes
    client.activate_stack("default")  # what running `zenml` with another store leaves behind
    assert ensure_runnable_stack() == PROJECT_STACK
    assert client.active_stack_model.name == PROJECT_STACK
