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

    @bentoml.api(route="/predict")
    def predict(self, image: Path, top_k: int = 3) -> dict:
        size = image.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            return JSONResponse({"error": f"upload is {size} bytes; the limit is {MAX_UPLOAD_BYTES}"}, status_code=413)
        try:
            return self.predictor.predict(image.read_bytes(), top_k=top_k)
        except ImageRejected as exc:
            return JSONResponse(
                {"error": f"the upload is not a usable image: {exc.reason}: {exc.detail}"}, status_code=400
            )

    @bentoml.api(route="/predict/url")
    def predict_url(self, url: str, top_k: int = 3) -> dict:
        """The image at `url` (http/https, global addresses unless IMGCLF_URL_ALLOW_PRIVATE), as /predict."""
        try:
            data = fetch_image_bytes(url, self.url_policy)
        except UrlRejected as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        try:
            return self.predictor.predict(data, top_k=top_k)
        except ImageRejected as exc:
            return JSONResponse({"error": f"the URL's content is not a usable image: {exc.reason}"}, status_code=400)


# Limits, keys and Host names from IMGCLF_* variables (guard_config.py); built in each worker.
ImageClassifier.add_asgi_middleware(RequestGuard)
