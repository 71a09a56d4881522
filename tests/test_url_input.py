"""Image-URL input: the service's fetch policy from the environment, and refusals as client errors.
Only a local test server on 127.0.0.1 is contacted (allowed by the explicit private-network setting)."""

from __future__ import annotations

import http.server
import io
import threading

import pytest
from PIL import Image

from imgclf.serving.url_input import UrlRejected, fetch_image_bytes, url_policy

PNG = io.BytesIO()
Image.new("RGB", (16, 16), (200, 10, 10)).save(PNG, "PNG")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/metadata"):
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
            return
        body = PNG.getvalue() if self.path.startswith("/digit.png") else b"x" * (30 * 1024 * 1024)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_private_addresses_only_by_the_explicit_setting(server):
    with pytest.raises(UrlRejected) as refused:
        fetch_image_bytes(f"{server}/digit.png?token=secret", url_policy({}))
    assert refused.value.status == 400 and "not_global" in refused.value.message
    assert "secret" not in refused.value.message  # the query string is never repeated
    allowed = url_policy({"IMGCLF_URL_ALLOW_PRIVATE": "1"})
    assert fetch_image_bytes(f"{server}/digit.png", allowed) == PNG.getvalue()


def test_redirects_to_the_metadata_address_oversized_bodies_and_non_strings_are_client_errors(server):
    allowed = url_policy({"IMGCLF_URL_ALLOW_PRIVATE": "true"})
    with pytest.raises(UrlRejected) as metadata:
        fetch_image_bytes(f"{server}/metadata", allowed)
    assert metadata.value.status == 400 and "blocked link-local address (not_global)" in metadata.value.message
    with pytest.raises(UrlRejected) as big:
        fetch_image_bytes(f"{server}/big", allowed)
    assert big.value.status == 413 and "too_large" in big.value.message
    for bad in (None, 42, "", "file:///etc/passwd", "ftp://example.org/x.png"):
        with pytest.raises(UrlRejected) as refused:
            fetch_image_bytes(bad, allowed)
        assert refused.value.status == 400


def test_the_allow_list_and_its_settings_are_read_from_the_environment():
    policy = url_policy(
        {"IMGCLF_URL_ALLOWED_HOSTS": "images.example.org, .cdn.example.net", "IMGCLF_URL_DEADLINE_S": "3"}
    )
    assert policy.allowed_hosts == ["images.example.org", ".cdn.example.net"] and policy.deadline_s == 3
    assert not policy.allow_private and policy.max_bytes == 20 * 1024 * 1024
    with pytest.raises(UrlRejected, match="host_not_allowed"):
        fetch_image_bytes("https://elsewhere.example.com/a.png", policy)


@pytest.mark.service
def test_the_service_predicts_an_image_by_url_and_refuses_the_metadata_address(server, servable_bundle, monkeypatch):
    import requests

    from conftest import free_port
    from imgclf.serving import deployment

    monkeypatch.setenv("IMGCLF_URL_ALLOW_PRIVATE", "1")  # to reach the local test server
    running = deployment.start(servable_bundle, "local-test", "5", deployment.DeployConfig(port=free_port()))
    try:
        answer = requests.post(f"{running.url}/predict/url", json={"url": f"{server}/digit.png"}, timeout=30)
        assert answer.status_code == 200 and answer.json()["model_version"] == "5"
        for url, status, reason in (
            (f"{server}/metadata", 400, "not_global"),
            (f"{server}/big", 413, "too_large"),
            ("file:///etc/passwd", 400, "scheme"),
        ):
            refused = requests.post(f"{running.url}/predict/url", json={"url": url}, timeout=30)
            assert refused.status_code == status and reason in refused.json()["error"], refused.text
    finally:
        deployment.stop(running.pid)
