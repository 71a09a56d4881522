"""The BentoML service: POST /predict (image upload), POST /predict/url ({"url": ...}: fetched by the
guarded fetcher); GET /healthz and /readyz are BentoML's own.

The model folder comes from IMGCLF_MODEL_DIR (a bundle folder or an .onnx file) and its registry
version from IMGCLF_MODEL_VERSION; `imgclf serve` and the deploy step set both.
"""

from __future__ import annotations

import os
from pathlib import Path

import bentoml
from starlette.responses import JSONResponse

from imgclf.data.decode import ImageRejected
from imgclf.serving.deployment import MODEL_DIR_ENV, MODEL_VERSION_ENV
from imgclf.serving.guard import RequestGuard
from imgclf.serving.metrics import (
    record_batch,
    record_model,
    record_prediction,
    record_rejection,
    record_url_fetch,
)
from imgclf.serving.page import page_app
from imgclf.serving.predictor import MAX_UPLOAD_BYTES, Predictor
from imgclf.serving.url_input import UrlRejected, fetch_image_bytes, url_policy


@bentoml.service(name="imgclf", workers=1, traffic={"timeout": 30})
class ImageClassifier:
    def __init__(self) -> None:
        model = os.environ.get(MODEL_DIR_ENV)
        if not model:
            raise RuntimeError(f"set {MODEL_DIR_ENV} to a model bundle folder or .onnx file")
        self.predictor = Predictor.from_path(model, os.environ.get(MODEL_VERSION_ENV) or None)
        self.url_policy = url_policy()
        record_model(self.predictor.model_version)

    @bentoml.api(route="/predict")
    def predict(self, image: Path, top_k: int = 3) -> dict:
        size = image.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            record_rejection("body_too_large")
            return JSONResponse({"error": f"upload is {size} bytes; the limit is {MAX_UPLOAD_BYTES}"}, status_code=413)
        return self._classify(image.read_bytes(), top_k, "the upload")

    @bentoml.api(route="/predict/url")
    def predict_url(self, url: str, top_k: int = 3) -> dict:
        """The image at `url` (http/https, global addresses unless IMGCLF_URL_ALLOW_PRIVATE), as /predict."""
        try:
            data = fetch_image_bytes(url, self.url_policy)
        except UrlRejected as exc:
            record_url_fetch(exc.reason)
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        record_url_fetch("ok")
        return self._classify(data, top_k, "the URL's content")

    def _classify(self, data: bytes, top_k: int, what: str) -> dict | JSONResponse:
        try:
            result = self.predictor.predict(data, top_k=top_k)
        except ImageRejected as exc:
            record_rejection(exc.reason)
            return JSONResponse({"error": f"{what} is not a usable image: {exc.reason}: {exc.detail}"}, status_code=400)
        record_batch(1)  # one image per model call
        record_prediction(result)
        return result


# The web page at `/` (only that path goes to it; BentoML's own index page is behind it)
ImageClassifier.mount_asgi_app(page_app(), path="/")
# Limits, keys and Host names from IMGCLF_* variables (guard_config.py); built in each worker. Its
# refusals are counted by reason in /metrics.
ImageClassifier.add_asgi_middleware(RequestGuard, on_reject=record_rejection)
