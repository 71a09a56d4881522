"""POST /predict answered straight from the request body, without BentoML's input layer.

BentoML writes each upload to a named temporary file, validates the form through a pydantic model and
sweeps a temporary folder after every request: more CPU per request than decoding a thumbnail, on the
cores the model needs (bench/service_load.py measures the service with it). The BentoML API stays the
route's definition (OpenAPI, BentoML clients, in-process calls); this middleware, placed inside the
request guard, answers the route's HTTP requests. It reads the form with Starlette's parser, the one
BentoML uses, so both see the same parts, and the guard has already refused any form its rule does not
allow (only `image` file parts and one short `top_k`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

Answer = Callable[[list[bytes], int], Awaitable[Response]]


class UploadRoute:
    """ASGI middleware: `answer(images, top_k)` answers POST `path`; everything else goes on to `app`."""

    def __init__(self, app: ASGIApp, answer: Answer, path: str = "/predict", default_top_k: int = 3) -> None:
        self.app, self.answer, self.path, self.default_top_k = app, answer, path, default_top_k

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        response = await self._respond(Request(scope, receive))
        await response(scope, receive, send)

    async def _respond(self, request: Request) -> Response:
        async with request.form() as form:
            parts = form.getlist("image")
            if any(not isinstance(part, UploadFile) for part in parts):
                return _bad_request("the form field image must be a file upload, not a text value")
            top_k = form.get("top_k", str(self.default_top_k))
            if not isinstance(top_k, str) or not top_k.strip().lstrip("+-").isdigit():
                return _bad_request("top_k must be a whole number")
            images = [await part.read() for part in parts]
        return await self.answer(images, int(top_k))


def _bad_request(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)
