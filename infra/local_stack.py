"""Register and activate the embedded local stack. Idempotent: existing components are kept.

Stack `imgclf-local`: local orchestrator, local artifact store, MLflow experiment tracker and model
registry (SQLite backend), BentoML model deployer, Evidently data validator. All paths come from the
environment set by infra/env.sh (or by a test), so state stays where the caller put it.

Run:  python infra/local_stack.py
"""

from __future__ import annotations

import os
from pathlib import Path

from imgclf.paths import state_dir

STACK = "imgclf-local"
MLFLOW_EXPERIMENT = "imgclf"


def ensure_mlflow_experiment(tracking_uri: str, artifact_root: Path) -> None:
    """Create the experiment with artifacts inside the state folder (MLflow's default is ./mlruns)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    if client.get_experiment_by_name(MLFLOW_EXPERIMENT) is None:
        artifact_root.mkdir(parents=True, exist_ok=True)
        client.create_experiment(MLFLOW_EXPERIMENT, artifact_location=artifact_root.as_uri())


def ensure_stack(stack: str, components: dict, changed=lambda component, config: True) -> None:
    """Create each component that is missing, update one whose configuration `changed`, create the stack
    from them if missing, and activate it (shared with infra/team_stack.py)."""
    from zenml.client import Client

    client = Client()
    names = {}
    for ctype, (name, flavor, config) in components.items():
        try:
            component = client.get_stack_component(ctype, name, allow_name_prefix_match=False)
            if changed(component, config):
                client.update_stack_component(name, ctype, configuration=config)
        except KeyError:
            client.create_stack_component(name=name, flavor=flavor, component_type=ctype, configuration=config)
        names[ctype] = name
    try:
        client.get_stack(stack, allow_name_prefix_match=False)
    except KeyError:
        client.create_stack(name=stack, components=names)
    client.activate_stack(stack)


def ensure_local_stack() -> str:
    from zenml.enums import StackComponentType as T

    state = state_dir().resolve()
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state / 'mlflow' / 'mlflow.db'}"
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    ensure_mlflow_experiment(tracking_uri, state / "mlflow" / "artifacts")

    components = {
        T.ORCHESTRATOR: ("imgclf-orchestrator", "local", {}),
        T.ARTIFACT_STORE: ("imgclf-artifacts", "local", {"path": str(state / "artifacts")}),
        T.EXPERIMENT_TRACKER: (
            "imgclf-mlflow-tracker",
            "mlflow",
            {"tracking_uri": tracking_uri, "experiment_name": MLFLOW_EXPERIMENT},
        ),
        T.MODEL_REGISTRY: ("imgclf-mlflow-registry", "mlflow", {}),
        T.MODEL_DEPLOYER: ("imgclf-bentoml", "bentoml", {}),
        T.DATA_VALIDATOR: ("imgclf-evidently", "evidently", {}),
    }

    def changed(component, config: dict) -> bool:  # a kept component only follows a moved tracking URI
        return component.configuration.get("tracking_uri", tracking_uri) != tracking_uri

    ensure_stack(STACK, components, changed)
    return STACK


if __name__ == "__main__":
    name = ensure_local_stack()
    print(f"active ZenML stack: {name} (state in {state_dir().resolve()})")
