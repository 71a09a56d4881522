"""Render an evaluation report (or any local HTML file) in headless Chromium and save a full-page PNG.

    .venv/bin/python infra/screenshot_report.py \
        .state/reports/image-classifier-v1/report.html docs/evaluation_report.png

Uses Debian's /usr/bin/chromium, or the Chrome/Chromium that IMGCLF_CHROMIUM names (GitHub's Ubuntu runner:
.ci/run sets it), through playwright (never downloads a browser); prints each image's
alt text and whether it loaded, and fails if one did not. The report's browser test uses
`open_in_chromium` too."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Ubuntu's apt `chromium` is a snap stub that does not run in CI, so the binary can be named
CHROMIUM = Path(os.environ.get("IMGCLF_CHROMIUM") or "/usr/bin/chromium")
# no sandbox (root in CI); no background networking: this machine's closed network refuses it
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def open_in_chromium(source: str | Path, screenshot: str | Path) -> dict:
    """Load `source` (file) headless, save a full-page screenshot; return what the page showed:
    images [alt, complete, naturalWidth, naturalHeight], h2 headings, and requests that failed."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            failed: list[str] = []
            page.on("requestfailed", lambda request: failed.append(request.url[:80]))
            page.goto(Path(source).resolve().as_uri(), wait_until="load")
            shown = {
                "images": page.evaluate(
                    "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
                ),
                "headings": page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)"),
                "failed_requests": failed,
            }
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return shown


def main(source: str, target: str) -> int:
    shown = open_in_chromium(source, target)
    broken = [alt for alt, complete, width, _ in shown["images"] if not (complete and width > 0)]
    for alt, *_ in shown["images"]:
        print(f"{'BROKEN' if alt in broken else 'loaded'}: {alt}")
    print(f"screenshot: {target}")
    return 1 if broken or shown["failed_requests"] else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
