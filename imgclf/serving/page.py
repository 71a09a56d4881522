"""The web page at `/`: choose, drop or paste the URL of an image and see the top-k as bars, with the
model version and stage and the round-trip time. One self-contained file (page.html: no CDN, works
offline), mounted on the BentoML app, which sends only the path `/` to it."""

from __future__ import annotations

import html
import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from imgclf.serving.deployment import MODEL_STAGE_ENV, MODEL_VERSION_ENV

PAGE = Path(__file__).with_name("page.html")


def render_page(version: str, stage: str) -> str:
    shown_stage = f" (@{stage})" if stage else ""
    return PAGE.read_text().replace("__VERSION__", html.escape(version)).replace("__STAGE__", html.escape(shown_stage))


def page_app() -> Starlette:
    text = render_page(os.environ.get(MODEL_VERSION_ENV) or "local", os.environ.get(MODEL_STAGE_ENV, ""))

    async def index(_: Request) -> HTMLResponse:
        return HTMLResponse(text, headers={"Cache-Control": "no-store"})

    return Starlette(routes=[Route("/", index, methods=["GET"])])
