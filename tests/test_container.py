"""The serving image (deploy/Dockerfile) built and run with podman: no image registry is reachable here,
so the base is made with debootstrap from Debian's packages (the Dockerfile's default is the official
Python slim image). The image runs as a non-root user, holds neither torch nor ZenML, has a health check,
and serves a mounted model and a baked-in one. It also checks the Bento definition builds.

Needs podman, runc and debootstrap (.ci/run installs them); skipped without them unless
IMGCLF_REQUIRE_CONTAINER is set (CI), where a missing tool fails the test instead."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import requests

from conftest import ROOT, free_port

BASE = "localhost/debian-py:local"
IMAGE = "localhost/imgclf-serve:test"
TOOLS = ("podman", "runc", "debootstrap")
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]  # crun fails on this kernel's cgroups
CA = "/etc/ssl/certs/ca-certificates.crt"  # pip inside the build reaches the registry with the host's bundle


def podman(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", "--runtime", "runc", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def base_image():
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        if os.environ.get("IMGCLF_REQUIRE_CONTAINER"):
            pytest.fail(f"{', '.join(missing)} not installed (.ci/run installs them)")
        pytest.skip(f"{', '.join(missing)} not installed")
    result = subprocess.run(["bash", str(ROOT / "deploy" / "make_base.sh"), BASE], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return BASE


def build(*extra: str) -> None:
    result = podman(
        "build", "--format", "docker", "--network", "host", *LIMITS, "-v", f"{CA}:{CA}:ro",
        "--build-arg", f"BASE={BASE}", "-f", "deploy/Dockerfile", *extra, str(ROOT),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


def run_container(image: str, port: int, *args: str) -> str:
    env = ["-e", "IMGCLF_BIND_HOST=127.0.0.1", "-e", f"IMGCLF_PORT={port}", "-e", "IMGCLF_MODEL_VERSION=7"]
    result = podman("run", "-d", "--rm", *LIMITS, "--network", "host", *env, *args, image)
    assert result.returncode == 0, result.stderr[-2000:]
    container = result.stdout.strip()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return container
        except OSError:
            time.sleep(0.5)
    logs = podman("logs", container).stdout[-2000:]
    podman("stop", "-t", "2", container)
    raise AssertionError(f"the container was not ready in 120 s:\n{logs}")


def predict(port: int, digit_png: bytes) -> dict:
    response = requests.post(
        f"http://127.0.0.1:{port}/predict", files={"image": ("d.png", digit_png, "image/png")}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
def test_the_serving_image_runs_a_mounted_and_a_baked_model_as_non_root(base_image, servable_bundle, small_model):
    bundle = servable_bundle
    _, manifest = small_model
    digit = manifest.absolute_paths()[0].read_bytes()
    build("--target", "serve", "-t", IMAGE)
    health = podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", IMAGE).stdout
    assert "/readyz" in health  # kept: built with --format docker

    port = free_port()
    container = run_container(IMAGE, port, "-v", f"{bundle}:/model:ro")
    try:
        answer = predict(port, digit)
        assert answer["model_version"] == "7" and answer["label"] == answer["top_k"][0]["label"]
        assert podman("exec", container, "id", "-u").stdout.strip() == "10001"
        probe = "import importlib.util as u; print([m for m in ('torch', 'zenml', 'timm') if u.find_spec(m)])"
        assert podman("exec", container, "python3", "-c", probe).stdout.strip() == "[]"
    finally:
        podman("stop", "-t", "5", container)

    refused = podman("run", "--rm", *LIMITS, "--network", "none", "-v", f"{bundle}:/model:ro", IMAGE, timeout=120)
    assert refused.returncode != 0 and "without API keys" in refused.stderr  # 0.0.0.0, no keys: it never starts

    build("--target", "baked", "--build-context", f"model={bundle}", "-t", f"{IMAGE}-baked")
    port = free_port()
    container = run_container(f"{IMAGE}-baked", port)
    try:
        assert predict(port, digit)["label"] == answer["label"]  # the same model, baked in
    finally:
        podman("stop", "-t", "5", container)


def test_the_bento_definition_builds(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml")}
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    result = subprocess.run(
        [bentoml, "build", "-f", "deploy/bentofile.yaml", "."], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (bento,) = [p for p in (tmp_path / "bentoml" / "bentos" / "imgclf").iterdir() if p.is_dir()]
    assert (bento / "src" / "imgclf" / "serving" / "service.py").is_file()
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "onnxruntime" in requirements and "torch" not in requirements
