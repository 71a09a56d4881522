"""The HTTP service end to end: a real BentoML server on 127.0.0.1, started and stopped by the test."""

from __future__ import annotations

import io
import json
import urllib.request

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import free_port
from imgclf import paths
from imgclf.data.decode import ImageRejected
from imgclf.serving import deployment
from imgclf.serving.predictor import Predictor

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def test_images(small_model):
    """(png bytes, true label) for the first 10 test images."""
    _, manifest = small_model
    test = manifest.subset("test").records.head(10)
    root = manifest.root
    return [(open(f"{root}/{p}", "rb").read(), label) for p, label in zip(test["path"], test["label"])]


def test_predictor_returns_ranked_probabilities(servable_bundle, test_images):
    predictor = Predictor.from_path(servable_bundle, "7")
    result = predictor.predict(test_images[0][0], top_k=3)
    assert set(result) == {"label", "confidence", "top_k", "model_version"}
    assert result["model_version"] == "7" and len(result["top_k"]) == 3
    confidences = [t["confidence"] for t in result["top_k"]]
    assert confidences == sorted(confidences, reverse=True) and result["label"] == result["top_k"][0]["label"]
    correct = sum(predictor.predict(data)["label"] == label for data, label in test_images)
    assert correct >= 8, f"only {correct}/10 test digits classified correctly"


def test_predictor_rejects_text_with_a_reason(servable_bundle):
    with pytest.raises(ImageRejected) as err:
        Predictor.from_path(servable_bundle).predict(b"hello, I am not an image")
    assert err.value.reason == "not_an_image"


@pytest.fixture(scope="module")
def server(servable_bundle):
    port = free_port()
    running = deployment.start(
        servable_bundle, "local-test", "42", deployment.DeployConfig(port=port, ready_timeout_s=90)
    )
    yield running
    deployment.stop(running.pid)


def test_service_predicts_a_real_digit(server, test_images):
    correct = 0
    for data, label in test_images[:5]:
        response = requests.post(f"{server.url}/predict", files={"image": ("digit.png", data, "image/png")}, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == "42" and body["label"] in [str(d) for d in range(10)]
        assert 0 < body["confidence"] <= 1 and len(body["top_k"]) == 3
        correct += body["label"] == label
    assert correct >= 4


def test_service_answers_400_for_text_and_broken_images(server, test_images):
    response = requests.post(
        f"{server.url}/predict", files={"image": ("notes.txt", b"just some text", "text/plain")}, timeout=30
    )
    assert response.status_code == 400 and "not_an_image" in response.json()["error"]
    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(png, format="PNG")
    truncated = png.getvalue()[:200]
    response = requests.post(f"{server.url}/predict", files={"image": ("cut.png", truncated, "image/png")}, timeout=30)
    assert response.status_code == 400 and "truncated" in response.json()["error"]


def test_service_health_and_stop(servable_bundle):
    port = free_port()
    running = deployment.start(servable_bundle, "local-test", "1", deployment.DeployConfig(port=port))
    with urllib.request.urlopen(f"{running.url}/healthz", timeout=5) as response:
        assert response.status == 200
    record = json.loads((paths.deployments_dir() / f"{port}.json").read_text())
    assert record["pid"] == running.pid
    assert deployment.stop_recorded(port)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{running.url}/healthz", timeout=5)


def test_deploy_refuses_a_port_in_use(servable_bundle):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {port} .* already in use"):
            deployment.start(servable_bundle, "local-test", "1", deployment.DeployConfig(port=port))
