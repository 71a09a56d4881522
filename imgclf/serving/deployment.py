"""Running the BentoML service as a background process: start, wait until ready, record, stop.

Why not ZenML's BentoML model deployer: in ZenML 0.98 its local service takes BentoML 1.4's
new-style service for a legacy one and dies on start ("'Service' object has no attribute
'runners'"). `bentoml serve` started here is the same server, without that layer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from imgclf import paths
from imgclf.serving.guard_config import BIND_HOST_ENV, check_service_settings

MODEL_DIR_ENV = "IMGCLF_MODEL_DIR"
MODEL_VERSION_ENV = "IMGCLF_MODEL_VERSION"
MODEL_STAGE_ENV = "IMGCLF_MODEL_STAGE"  # shown on the web page


class DeployConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="interface to listen on")
    port: int = Field(3000, ge=1, le=65535)
    ready_timeout_s: float = Field(90, gt=0)


@dataclass
class Deployment:
    status: str  # "running" or "skipped"
    reason: str
    url: str = ""
    pid: int = 0
    model_uri: str = ""
    model_version: str = ""
    log_file: str = ""
    stage: str = ""  # the registry stage it serves ("": a fixed version); moves of that stage redeploy it


def serve_command(
    model_dir: str | Path, version: str, host: str, port: int, stage: str = ""
) -> tuple[list[str], dict[str, str]]:
    """The `bentoml serve` command line and environment that serve `model_dir`. Raises GuardConfigError
    for a non-loopback `host` without API keys, or IMGCLF_* settings that cannot be used."""
    env = {**os.environ, MODEL_DIR_ENV: str(Path(model_dir).resolve()), MODEL_VERSION_ENV: str(version)}
    env["BENTOML_HOME"] = str(server_home(port).resolve())
    env[MODEL_STAGE_ENV] = stage
    env[BIND_HOST_ENV] = host
    check_service_settings(env)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    cmd = [
        bentoml,
        "serve",
        "imgclf.serving.service:ImageClassifier",
        "--host",
        host,
        "--port",
        str(port),
        "--working-dir",
        package_root,
    ]
    return cmd, env


def server_home(port: int) -> Path:
    """The BENTOML_HOME of the server on `port`. BentoML keeps its Prometheus multiprocess files in
    BENTOML_HOME/prometheus_multiproc_dir and empties that folder when a server starts (there is no
    setting for the folder alone), so servers sharing a home (staging and production) would wipe each
    other's /metrics. The service loads its model from MODEL_DIR_ENV, never from BentoML's stores."""
    return paths.deployments_dir() / "bentoml" / str(port)


def wait_ready(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} was not ready after {timeout_s:.0f} s")


def deploy_version(
    name: str, version: str, stage: str, config: DeployConfig, tracking_uri: str | None = None
) -> Deployment:
    """Fetch a registered version and serve it for `stage`, replacing the service on the same port."""
    from imgclf.registry import fetch_bundle

    uri = f"models:/{name}/{version}"
    bundle, version = fetch_bundle(uri, paths.deployments_dir() / f"{name}-v{version}", tracking_uri)
    return start(bundle, uri, version, config, stage=stage)


def redeploy_stage(name: str, stage: str, version: str, tracking_uri: str | None = None) -> list[Deployment]:
    """Point every running service of `name`'s `stage` (recorded by `start`) at `version`: what makes
    the served model follow a promotion or rollback made outside a pipeline."""
    moved = []
    for record_path in sorted(paths.deployments_dir().glob("*.json")):
        record = Deployment(**json.loads(record_path.read_text()))
        if record.stage != stage or not record.model_uri.startswith(f"models:/{name}/") or not _alive(record.pid):
            continue
        where = urllib.parse.urlsplit(record.url)
        config = DeployConfig(host=where.hostname, port=where.port)
        moved.append(deploy_version(name, version, stage, config, tracking_uri))
    return moved


def start(model_dir: str | Path, model_uri: str, version: str, config: DeployConfig, stage: str = "") -> Deployment:
    """Start the service in its own session (it outlives the caller), replacing one on the same port."""
    cmd, env = serve_command(model_dir, version, config.host, config.port, stage)  # first: it refuses unsafe settings
    record_path = paths.deployments_dir() / f"{config.port}.json"
    stop_recorded(config.port)
    _ensure_port_free(config.host, config.port)
    log_file = paths.deployments_dir() / f"{config.port}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    url = f"http://{config.host}:{config.port}"
    try:
        wait_ready(url, config.ready_timeout_s, process)
    except Exception as exc:
        stop(process.pid)
        tail = log_file.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"service for {model_uri} did not start: {exc}\n--- {log_file} ---\n{tail}") from None
    reason = f"serves @{stage}" if stage else "serves a fixed version"
    deployment = Deployment("running", reason, url, process.pid, model_uri, version, str(log_file), stage)
    record_path.write_text(json.dumps(asdict(deployment), indent=2))
    return deployment


def _ensure_port_free(host: str, port: int) -> None:
    """BentoML binds with SO_REUSEPORT, so a second server on a busy port would silently share it."""
    import socket

    with socket.socket() as probe:
        probe.settimeout(1)
        if probe.connect_ex((host, port)) == 0:
            raise RuntimeError(
                f"port {port} on {host} is already in use by a process this project did not start; "
                "stop it or set deploy.config.port to another port"
            )


def stop(pid: int, timeout_s: float = 20) -> None:
    """SIGTERM the server (BentoML then stops its workers); SIGKILL the group if it does not exit."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished:
                return
        except ChildProcessError:  # not our child: poll for existence
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def stop_recorded(port: int) -> bool:
    """Stop the deployment recorded for `port`, if its process is still alive."""
    record_path = paths.deployments_dir() / f"{port}.json"
    if not record_path.is_file():
        return False
    record = json.loads(record_path.read_text())
    if _alive(int(record["pid"])):
        stop(int(record["pid"]))
    record_path.unlink()
    return True


def _alive(pid: int) -> bool:
    """The recorded service still runs (and the pid was not recycled by another program)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        return b"imgclf.serving.service" in cmdline.read_bytes()
    except OSError:
        return False
