"""The service's web page in headless Chromium: upload an image, then screenshot the answer.

    .venv/bin/python infra/screenshot_page.py http://127.0.0.1:3000/ data/digits/3/0003.png docs/service_page.png

Drives Debian's Chromium (or the one IMGCLF_CHROMIUM names) through playwright, as
infra/screenshot_report.py does; tests/test_service_page.py uses `open_page` too."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

_REPORT = runpy.run_path(str(Path(__file__).with_name("screenshot_report.py")))
CHROMIUM, ARGS = _REPORT["CHROMIUM"], _REPORT["ARGS"]


def upload_and_read(page, image: str | Path) -> dict:
    """Choose `image` in the page's file input; what the page then shows (bars, or the error)."""
    page.set_input_files("#file", str(image))
    page.wait_for_selector("#bars li, #error:not([hidden])", timeout=30_000)
    return shown(page)


def shown(page) -> dict:
    return {
        "labels": page.eval_on_selector_all("#bars li .label", "items => items.map(i => i.textContent)"),
        "error": page.eval_on_selector("#error", "e => e.hidden ? '' : e.textContent"),
        "version": page.text_content("#version"),
        "latency": page.text_content("#latency"),
    }


def main(url: str, image: str, target: str) -> int:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 900})
            page.goto(url, wait_until="load")
            result = upload_and_read(page, image)
            page.screenshot(path=target, full_page=True)
        finally:
            browser.close()
    print(result)
    return 1 if result["error"] else 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    raise SystemExit(main(*sys.argv[1:]))
