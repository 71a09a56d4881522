"""The stack a pipeline runs on: the active one, unless it cannot run the steps at all.

Running `zenml` once in this checkout with another ZenML store (another virtual environment, or
without infra/env.sh) rewrites the repository's active stack to that store's `default` stack, which
has no experiment tracker; the next run would fail at compile time ("Step validate requires an
experiment tracker"). When the active stack has none, the project's own stack is activated instead,
with a warning; if it is not registered either, an error line before ZenML's says what to run.
Importing `pipelines` runs this check, so `zenml pipeline run pipelines.<name>` gets it before compiling.
"""

from __future__ import annotations

from zenml.client import Client
from zenml.enums import StackComponentType
from zenml.logger import get_logger

PROJECT_STACK = "imgclf-local"  # registered by infra/local_stack.py (make setup)

logger = get_logger(__name__)


def ensure_runnable_stack() -> str:
    """The name of the stack the pipeline will run on, after switching to the project's if needed."""
    client = Client()
    active = client.active_stack_model
    if active.components.get(StackComponentType.EXPERIMENT_TRACKER):
        return active.name
    try:
        client.activate_stack(PROJECT_STACK)
    except KeyError:
        logger.error(
            "the active ZenML stack %r has no experiment tracker, which the steps need, and the project's stack %r is "
            "not registered in this ZenML store. Run `make setup` (or `python infra/local_stack.py` with infra/env.sh "
            "sourced), or `zenml stack set` a stack with an MLflow experiment tracker.",
            active.name,
            PROJECT_STACK,
        )
        return active.name
    logger.warning(
        "the active ZenML stack %r has no experiment tracker; running on %r instead", active.name, PROJECT_STACK
    )
    return PROJECT_STACK
