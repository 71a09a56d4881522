"""The Kustomize overlays of deploy/k8s, rendered offline by kubectl and checked by infra/k8s_check.py
(what `make lint` runs): they pass, and each check refuses the mistake it is there for."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from conftest import load_infra_script

ROOT = Path(__file__).resolve().parent.parent


check = load_infra_script("k8s_check")
pytestmark = pytest.mark.skipif(check.kubectl() is None, reason="no kubectl to render the overlays: make setup")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {stage: check.render(check.OVERLAYS / stage) for stage in ("staging", "production")}


def _kind(docs: list[dict], kind: str) -> dict:
    return next(doc for doc in docs if doc["kind"] == kind)


def test_both_overlays_pass_every_check(rendered):
    for stage, docs in rendered.items():
        assert check.problems(docs) == [], stage
        kinds = {doc["kind"] for doc in docs}
        assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
        assert {"ServiceMonitor", "ConfigMap", "Namespace"} <= kinds


def test_the_overlays_differ_where_the_stages_do(rendered):
    staging, production = rendered["staging"], rendered["production"]
    assert {doc["metadata"].get("namespace") for doc in staging if doc["kind"] != "Namespace"} == {"imgclf-staging"}
    assert _kind(staging, "ConfigMap")["data"]["IMGCLF_MODEL_STAGE"] == "staging"
    assert _kind(production, "ConfigMap")["data"]["IMGCLF_MODEL_STAGE"] == "production"
    hpa = {stage: _kind(docs, "HorizontalPodAutoscaler")["spec"] for stage, docs in rendered.items()}
    assert hpa["staging"]["maxReplicas"] < hpa["production"]["minReplicas"]
    pod = _kind(production, "Deployment")["spec"]["template"]["spec"]
    assert pod["volumes"][0]["secret"]["secretName"] == "imgclf-api-keys"  # keys from a Secret, as digests


def _broken(docs: list[dict], kind: str, change) -> list[dict]:
    docs = copy.deepcopy(docs)
    change(_kind(docs, kind))
    return docs


def _container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_a_field_kubernetes_does_not_know_is_a_schema_error(rendered):
    docs = _broken(rendered["staging"], "Deployment", lambda d: _container(d).update(imagePullPolicyy="Always"))
    assert any("imagePullPolicyy" in p for p in check.schema_problems(docs))


def test_a_probe_on_a_path_the_guard_does_not_leave_open_is_refused(rendered):
    def probe_elsewhere(deployment):
        _container(deployment)["readinessProbe"]["httpGet"]["path"] = "/predict"

    docs = _broken(rendered["staging"], "Deployment", probe_elsewhere)
    assert any("readinessProbe" in p for p in check.reference_problems(docs))


def test_a_service_that_selects_no_pod_is_refused(rendered):
    docs = _broken(
        rendered["staging"], "Service", lambda s: s["spec"]["selector"].update({"app.kubernetes.io/name": "x"})
    )
    assert any(p.startswith("Service/imgclf: selects no pod") for p in check.reference_problems(docs))


def test_a_writable_root_filesystem_is_refused(rendered):
    def writable(deployment):
        _container(deployment)["securityContext"]["readOnlyRootFilesystem"] = False

    docs = _broken(rendered["production"], "Deployment", writable)
    assert check.pod_problems(docs) == ["container imgclf: readOnlyRootFilesystem must be true"]


def test_egress_that_reaches_the_metadata_address_or_other_ports_is_refused(rendered):
    def open_metadata(policy):
        policy["spec"]["egress"][1]["to"][0]["ipBlock"].pop("except")

    problems = check.network_problems(_broken(rendered["production"], "NetworkPolicy", open_metadata))
    assert any("169.254.169.254" in p for p in problems)

    def any_port(policy):
        policy["spec"]["egress"][1]["ports"].append({"port": 5432, "protocol": "TCP"})

    problems = check.network_problems(_broken(rendered["production"], "NetworkPolicy", any_port))
    assert any("only 80 and 443" in p for p in problems)


def test_settings_the_service_would_not_read_or_would_refuse_are_caught(rendered):
    typo = _broken(rendered["staging"], "ConfigMap", lambda c: c["data"].update(IMGCLF_MAX_CONCURENCY="8"))
    assert check.settings_problems(typo) == ["ConfigMap: IMGCLF_MAX_CONCURENCY is not a setting the service reads"]
    refused = _broken(rendered["staging"], "ConfigMap", lambda c: c["data"].update(IMGCLF_MAX_CONCURRENCY="0"))
    (problem,) = check.settings_problems(refused)
    assert "would refuse to start" in problem and "IMGCLF_MAX_CONCURRENCY" in problem
