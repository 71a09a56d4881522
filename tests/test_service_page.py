"""The web page at `/` in headless Chromium against the real service: an upload, an image URL (from a
local test server, allowed by the explicit private-network setting), and a non-image shown as an error;
reachable by keyboard. Needs Debian's Chromium (or IMGCLF_CHROMIUM); CI requires it."""

from __future__ import annotations

import http.server
import os
import runpy
import threading
from functools import partial

import pytest
import requests

from conftest import ROOT, free_port

pytestmark = pytest.mark.service
PAGE = runpy.run_path(str(ROOT / "infra" / "screenshot_page.py"))


@pytest.fixture(scope="module")
def service(small_model, servable_bundle, tmp_path_factory):
    if not PAGE["CHROMIUM"].exists() and not os.environ.get("IMGCLF_REQUIRE_BROWSER"):
        pytest.skip(f"no Chromium at {PAGE['CHROMIUM']}")
    from imgclf.serving import deployment

    _, manifest = small_model
    folder = tmp_path_factory.mktemp("page")
    digit = manifest.absolute_paths()[0]
    (folder / "files").mkdir()
    (folder / "files" / "digit.png").write_bytes(digit.read_bytes())
    images = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(http.server.SimpleHTTPRequestHandler, directory=str(folder / "files"))
    )
    threading.Thread(target=images.serve_forever, daemon=True).start()
    os.environ["IMGCLF_URL_ALLOW_PRIVATE"] = "1"  # the image URL is on the local test server
    try:
        running = deployment.start(
            servable_bundle, "local-test", "4", deployment.DeployConfig(port=free_port()), stage="staging"
        )
    finally:
        del os.environ["IMGCLF_URL_ALLOW_PRIVATE"]
    try:
        yield running.url, digit, f"http://127.0.0.1:{images.server_address[1]}/digit.png", folder
    finally:
        deployment.stop(running.pid)
        images.shutdown()


def test_the_page_classifies_an_upload_and_a_url_and_shows_an_error(service):
    from playwright.sync_api import sync_playwright

    url, digit, image_url, folder = service
    expected = requests.post(f"{url}/predict", files={"image": ("d.png", digit.read_bytes(), "image/png")}, timeout=30)
    label = expected.json()["label"]
    (folder / "note.png").write_text("not an image at all")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(PAGE["CHROMIUM"]), args=PAGE["ARGS"])
        try:
            page = browser.new_page()
            failed: list[str] = []
            page.on("requestfailed", lambda request: failed.append(request.url))
            page.goto(f"{url}/", wait_until="load")
            assert page.text_content("#version") == "4" and page.text_content("#stage") == " (@staging)"

            uploaded = PAGE["upload_and_read"](page, digit)
            assert uploaded["labels"][0] == label and len(uploaded["labels"]) == 3 and not uploaded["error"]
            assert uploaded["latency"].startswith("answered in ")

            page.focus("#url")  # the URL form by keyboard: type, then Enter submits it
            page.keyboard.type(image_url)
            page.keyboard.press("Enter")
            page.wait_for_function(
                "document.querySelector('#bars li') && !document.querySelector('#preview').src.startsWith('blob:')"
            )
            assert PAGE["shown"](page)["labels"][0] == label

            rejected = PAGE["upload_and_read"](page, folder / "note.png")
            assert rejected["labels"] == [] and "not a usable image" in rejected["error"]
            page.focus("body")
            reached = []
            for _ in range(6):
                page.keyboard.press("Tab")
                reached.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
            assert {"file", "url"} <= set(reached), reached
            assert failed == []
        finally:
            browser.close()
