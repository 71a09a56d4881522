"""Two services on one machine (staging and production) keep their own /metrics: starting the second
must not wipe the first's counters (BentoML empties its Prometheus multiprocess folder on start)."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port
from imgclf.serving import deployment

pytestmark = [pytest.mark.service, pytest.mark.slow]


def predictions(url: str) -> dict[str, float]:
    """imgclf_predictions_total by label, as the server at `url` shows it in /metrics."""
    text = requests.get(f"{url}/metrics", timeout=30).text
    return {
        sample.labels["label"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "imgclf_predictions_total"
    }


def test_starting_a_second_service_keeps_the_first_ones_metrics(small_model, servable_bundle):
    _, manifest = small_model
    digit = manifest.absolute_paths()[0].read_bytes()
    first_port, second_port = free_port(), free_port()
    assert deployment.server_home(first_port) != deployment.server_home(second_port)
    first = deployment.start(servable_bundle, "local-test", "1", deployment.DeployConfig(port=first_port))
    second = None
    try:
        answer = requests.post(f"{first.url}/predict", files={"image": ("d.png", digit, "image/png")}, timeout=30)
        assert answer.status_code == 200, answer.text
        label = answer.json()["label"]
        assert predictions(first.url) == {label: 1.0}
        second = deployment.start(servable_bundle, "local-test", "2", deployment.DeployConfig(port=second_port))
        assert predictions(second.url) == {}
        assert predictions(first.url) == {label: 1.0}, "starting the second service wiped the first one's metrics"
    finally:
        for running in (second, first):
            if running is not None:
                deployment.stop_recorded(int(running.url.rsplit(":", 1)[1]))
