"""deploy/k8s/training: the PyTorchJob that runs the training code across nodes, rendered offline by
kubectl's Kustomize. PyTorchJob is a custom resource with no schema here, so its pod templates are
validated as Pods against the Kubernetes schemas (strict), and the job's own fields are checked for
what the Training Operator needs and what the command relies on. Never applied to a cluster."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from conftest import load_infra_script
from imgclf.augment.policy import AugmentPolicy
from imgclf.train.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
TRAINING = ROOT / "deploy" / "k8s" / "training"


check = load_infra_script("k8s_check")
pytestmark = pytest.mark.skipif(check.kubectl() is None, reason="no kubectl to render the manifests: make setup")


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return check.render(TRAINING)


def _one(docs: list[dict], kind: str) -> dict:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def _replicas(docs: list[dict]) -> dict[str, dict]:
    job = _one(docs, "PyTorchJob")
    assert job["apiVersion"] == "kubeflow.org/v1"
    return job["spec"]["pytorchReplicaSpecs"]


def _env(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def test_the_pod_templates_and_the_plain_objects_pass_the_kubernetes_schemas(docs):
    plain = [doc for doc in docs if doc["kind"] != "PyTorchJob"]
    assert {doc["kind"] for doc in plain} == {"ConfigMap", "PersistentVolumeClaim"}
    pods = [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"imgclf-train-{role.lower()}"}, **spec["template"]}
        for role, spec in _replicas(docs).items()
    ]
    assert check.schema_problems(plain + pods) == []


def test_the_job_is_one_master_and_workers_that_agree_on_the_node_count(docs):
    replicas = _replicas(docs)
    assert set(replicas) == {"Master", "Worker"} and replicas["Master"]["replicas"] == 1
    pods = sum(spec["replicas"] for spec in replicas.values())
    for role, spec in replicas.items():
        assert spec["restartPolicy"] == "OnFailure", role
        (container,) = spec["template"]["spec"]["containers"]
        assert container["name"] == "pytorch", role  # the operator injects MASTER_ADDR/PORT, RANK into this one
        assert int(_env(container)["IMGCLF_NNODES"]) == pods, role
        assert container["resources"]["limits"].get("nvidia.com/gpu"), role


def test_the_command_runs_imgclf_train_under_torchrun_on_what_the_pod_mounts(docs):
    pvc = _one(docs, "PersistentVolumeClaim")
    config_map = _one(docs, "ConfigMap")
    for role, spec in _replicas(docs).items():
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == ["/bin/sh", "-c"], role
        words = shlex.split(" ".join(container["args"]))
        assert words[:4] == ["exec", "python", "-m", "torch.distributed.run"], role
        assert words[words.index("-m", 4) :][:3] == ["-m", "imgclf.cli", "train"], role
        for flag in ("--nnodes", "--nproc_per_node", "--node_rank", "--master_addr", "--master_port"):
            assert any(word.startswith(f"{flag}=$") for word in words), (role, flag)
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in container["volumeMounts"]}
        assert mounts["/workspace"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        config_dir = mounts["/etc/imgclf/train"]["configMap"]["name"]
        assert config_dir == config_map["metadata"]["name"]
        for flag, key in (("--config", "train.yaml"), ("--augment", "augment.yaml")):
            assert words[words.index(flag) + 1] == f"/etc/imgclf/train/{key}", role
        out = words[words.index("--out") + 1]
        assert out.startswith("/workspace/"), "the bundle and checkpoints must outlive the pods"
    # what the pods are given parses as the typed configs the pipeline's train and augment steps take
    TrainConfig(**yaml.safe_load(config_map["data"]["train.yaml"]))
    AugmentPolicy(**yaml.safe_load(config_map["data"]["augment.yaml"]))
