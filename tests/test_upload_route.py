"""UploadRoute, the ASGI middleware that answers POST /predict from the body (a real Starlette app
behind it, driven in process through httpx's ASGI transport)."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from imgclf.serving.upload_route import UploadRoute


def _app() -> tuple[UploadRoute, list]:
    calls = []

    async def answer(images: list[bytes], top_k: int) -> JSONResponse:
        calls.append((images, top_k))
        return JSONResponse({"images": len(images), "top_k": top_k})

    async def behind(request):
        return PlainTextResponse(f"app {request.method} {request.url.path}")

    routes = [Route("/predict", behind, methods=["GET", "POST"]), Route("/other", behind, methods=["POST"])]
    return UploadRoute(Starlette(routes=routes), answer=answer), calls


def _post(app, path: str = "/predict", **kwargs) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.post(path, **kwargs)

    return asyncio.run(go())


def test_the_images_in_part_order_and_top_k_reach_the_answer():
    app, calls = _app()
    files = [("image", ("a.png", b"first", "image/png")), ("image", ("b.jpg", b"second" * 1000, "image/jpeg"))]
    response = _post(app, files=files, data={"top_k": "4"})
    assert response.status_code == 200 and response.json() == {"images": 2, "top_k": 4}
    assert calls == [([b"first", b"second" * 1000], 4)]


def test_top_k_defaults_to_three_and_must_be_a_whole_number():
    app, calls = _app()
    files = {"image": ("a.png", b"x", "image/png")}
    assert _post(app, files=files).json()["top_k"] == 3
    for bad in ("2.5", "three", ""):
        response = _post(app, files=files, data={"top_k": bad})
        assert response.status_code == 400 and response.json() == {"error": "top_k must be a whole number"}
    assert len(calls) == 1  # nothing refused reached the answer


def test_a_text_value_for_image_is_a_400_and_never_read_as_a_path():
    app, calls = _app()
    response = _post(app, data={"image": "/etc/passwd"})
    assert response.status_code == 400 and "file upload" in response.json()["error"] and not calls


def test_other_paths_and_methods_go_to_the_app():
    app, calls = _app()
    assert _post(app, "/other", data={"x": "1"}).text == "app POST /other"

    async def get():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.get("/predict")

    assert asyncio.run(get()).text == "app GET /predict" and not calls
