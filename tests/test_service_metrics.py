"""The service's own Prometheus metrics: what each record_* call adds, read back from the registry."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from imgclf.serving.metrics import (
    record_batch,
    record_model,
    record_prediction,
    record_rejection,
    record_url_fetch,
)


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_each_record_adds_to_its_metric():
    before = {
        "label": value("imgclf_predictions_total", label="3"),
        "conf": value("imgclf_confidence_bucket", le="0.95"),
        "reject": value("imgclf_rejections_total", reason="not_an_image"),
        "url": value("imgclf_url_fetches_total", outcome="not_global"),
        "batch": value("imgclf_batch_size_bucket", le="8.0"),
    }
    record_prediction({"label": "3", "confidence": 0.93})
    record_prediction({"label": "3", "confidence": 0.50})
    record_rejection("not_an_image")
    record_url_fetch("not_global")
    record_batch(5)
    record_model("7")
    assert value("imgclf_predictions_total", label="3") == before["label"] + 2
    assert value("imgclf_confidence_bucket", le="0.95") == before["conf"] + 2  # both are <= 0.95
    assert value("imgclf_rejections_total", reason="not_an_image") == before["reject"] + 1
    assert value("imgclf_url_fetches_total", outcome="not_global") == before["url"] + 1
    assert value("imgclf_batch_size_bucket", le="8.0") == before["batch"] + 1
    assert value("imgclf_model_info", version="7") == 1


@pytest.mark.service
def test_the_real_service_shows_its_metrics_beside_bentomls(small_model, servable_bundle):
    """Recorded in the worker process, read at /metrics from BentoML's multiprocess collector."""
    import requests

    from conftest import free_port
    from imgclf.serving import deployment

    _, manifest = small_model
    digit = manifest.absolute_paths()[0].read_bytes()
    running = deployment.start(servable_bundle, "local-test", "9", deployment.DeployConfig(port=free_port()))
    try:
        answer = requests.post(f"{running.url}/predict", files={"image": ("d.png", digit, "image/png")}, timeout=30)
        label = answer.json()["label"]
        text = requests.post(f"{running.url}/predict", files={"image": ("t.png", b"hello", "image/png")}, timeout=30)
        wrong_type = requests.post(f"{running.url}/predict", data=b"{}", timeout=30)
        assert (text.status_code, wrong_type.status_code) == (400, 415)
        shown = requests.get(f"{running.url}/metrics", timeout=30).text
    finally:
        deployment.stop(running.pid)
    assert f'imgclf_predictions_total{{label="{label}"}} 1.0' in shown
    assert 'imgclf_rejections_total{reason="not_an_image"} 1.0' in shown
    assert 'imgclf_model_info{version="9"} 1.0' in shown
    assert "imgclf_confidence_bucket" in shown and "bentoml_service_request_total" in shown
    reasons = [line for line in shown.splitlines() if line.startswith("imgclf_rejections_total{")]
    assert len(reasons) == 2, reasons  # the guard's refusal of the wrong content type is counted too
