"""The BentoML service: POST /predict (one or several image uploads), POST /predict/url ({"url": ...}:
fetched by the guarded fetcher), the web page at /; GET /healthz and /readyz are BentoML's own.

Each request decodes its images in a worker thread, then the model runs them batched with other
requests' images in this process (batching.py: IMGCLF_MAX_BATCH_SIZE, IMGCLF_MAX_LATENCY_MS), so a slow
or hostile upload never holds up a batch. The model folder comes from IMGCLF_MODEL_DIR (a bundle folder
or an .onnx file) and its registry version from IMGCLF_MODEL_VERSION; `imgclf serve` and the deploy
step set both.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import bentoml
import numpy as np
from starlette.responses import JSONResponse

from imgclf.data.decode import ImageRejected, declared_pixels
from imgclf.monitoring.record import UPLOAD, source_of_url
from imgclf.serving.batching import BatchConfig, MicroBatcher, ModelBusy
from imgclf.serving.deployment import MODEL_DIR_ENV, MODEL_STAGE_ENV, MODEL_VERSION_ENV
from imgclf.serving.guard import RequestGuard
from imgclf.serving.guard_config import decode_limits_from_env
from imgclf.serving.metrics import (
    record_batch,
    record_model,
    record_prediction,
    record_rejection,
    record_url_fetch,
)
from imgclf.serving.observation import Observed, Recorder, observe
from imgclf.serving.page import page_app
from imgclf.serving.predictor import MAX_UPLOAD_BYTES, Predictor
from imgclf.serving.upload_route import UploadRoute
from imgclf.serving.url_input import UrlRejected, fetch_image_bytes, url_policy

# A request decoded on the event loop: at most this many bytes and, per image, pixels (about a
# millisecond of decoding on one core)
INLINE_MAX_BYTES, INLINE_MAX_PIXELS = 64 * 1024, 128 * 128


class UploadError(Exception):
    """An image of the request cannot be used: the HTTP status, the reason for the client, the metric."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason


@bentoml.service(name="imgclf", workers=1, traffic={"timeout": 30})
class ImageClassifier:
    def __init__(self) -> None:
        model = os.environ.get(MODEL_DIR_ENV)
        if not model:
            raise RuntimeError(f"set {MODEL_DIR_ENV} to a model bundle folder or .onnx file")
        self.predictor = Predictor.from_path(
            model, os.environ.get(MODEL_VERSION_ENV) or None, limits=decode_limits_from_env()
        )
        self.batcher = MicroBatcher(
            self.predictor.run_alone,
            self.predictor.run_lane,
            self.predictor.lanes,
            BatchConfig.from_env(),
            on_batch=record_batch,
        )
        self.url_policy = url_policy()
        # as many decoding threads as lanes: more only fight the model's lanes for the same cores
        self._decoders = ThreadPoolExecutor(self.predictor.lanes, thread_name_prefix="imgclf-decode")
        self.recorder = Recorder(self.predictor, os.environ.get(MODEL_STAGE_ENV), offload=self._decoders)
        record_model(self.predictor.model_version)

    @bentoml.on_shutdown
    def _close_log(self) -> None:
        self.recorder.close()  # a graceful stop loses no prediction log row

    @bentoml.api(route="/predict")
    async def predict(self, image: list[Path], top_k: int = 3) -> dict | list[dict]:
        """One `image` part gives one answer; several parts (up to the guard's part limit) a list of answers
        in the order of the parts. A request is answered whole or not at all: a part that is not a usable
        image is a 400 (413 if too large) naming it by position, and no image of the request is classified.
        Over HTTP, UploadRoute answers this route from the body (upload_route.py); this is the definition
        and the in-process entry."""
        return await self.answer_uploads([upload.read_bytes() for upload in image], top_k)

    async def answer_uploads(self, images: list[bytes], top_k: int) -> JSONResponse:
        """The uploads of one request -> its answer (or the refusal naming the first bad image)."""
        started = time.perf_counter()
        if not images:  # the guard requires the field; this covers a direct call
            return _refused(UploadError(400, "no image: upload one as an `image` file part", "no_image"))
        try:
            if _cheap_to_decode(images):  # less work than the hop to a decoding thread and back
                observed = self._prepare_uploads(images)
            else:
                observed = await self._decoding(self._prepare_uploads, images)
        except UploadError as exc:
            return _refused(exc)
        return await self._classify(observed, top_k, UPLOAD, started, single=len(images) == 1)

    @bentoml.api(route="/predict/url")
    async def predict_url(self, url: str, top_k: int = 3) -> dict:
        """The image at `url` (http/https, global addresses unless IMGCLF_URL_ALLOW_PRIVATE), as /predict."""
        started = time.perf_counter()
        try:
            data = await anyio.to_thread.run_sync(fetch_image_bytes, url, self.url_policy)
        except UrlRejected as exc:
            record_url_fetch(exc.reason)
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        record_url_fetch("ok")
        try:
            observed = await self._decoding(self._prepare, data, "the URL's content")
        except UploadError as exc:
            return _refused(exc)
        return await self._classify([observed], top_k, source_of_url(url), started, single=True)

    async def _decoding(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self._decoders, function, *args)

    def _prepare_uploads(self, uploads: list[bytes]) -> list[Observed]:
        """Decode and measure every upload (in a worker thread); the first bad one raises UploadError."""
        prepared = []
        for number, data in enumerate(uploads, 1):
            which = "the upload" if len(uploads) == 1 else f"image {number} of {len(uploads)}"
            if len(data) > MAX_UPLOAD_BYTES:
                limit = MAX_UPLOAD_BYTES
                raise UploadError(413, f"{which} is {len(data)} bytes; the limit is {limit}", "body_too_large")
            prepared.append(self._prepare(data, which))
        return prepared

    def _prepare(self, data: bytes, which: str) -> Observed:
        try:
            return observe(self.predictor, data, measure=self.recorder.measures)
        except ImageRejected as exc:
            raise UploadError(400, f"{which} is not a usable image: {exc.reason}: {exc.detail}", exc.reason) from None

    async def _classify(
        self, observed: list[Observed], top_k: int, source: str, started: float, single: bool
    ) -> JSONResponse:
        """Decoded images -> one answer each, through the batcher, each logged. A response object, not a
        dict: BentoML would derive the output's JSON schema again for every answer it serialises."""
        try:
            outputs = await self.batcher.run(np.stack([item.input for item in observed]))
        except ModelBusy as exc:
            record_rejection("model_busy")
            busy = {"error": f"the model is busy ({exc}); try again shortly"}
            return JSONResponse(busy, status_code=503, headers={"Retry-After": "1"})
        logits, embeddings = self.predictor.split(outputs)
        scores = self.predictor.scores(logits)  # once per image, for its answer and its log row
        answers = [self.predictor.scored_answer(row, top_k) for row in scores]
        for answer in answers:
            record_prediction(answer)
        self.recorder.record(observed, scores, embeddings, answers, source, started)
        return JSONResponse(answers[0] if single else answers)


def _cheap_to_decode(uploads: list[bytes]) -> bool:
    """Small files whose headers declare small images (thumbnails, the 64-px default run): decoded on the
    event loop. Anything bigger, or unreadable, goes to a thread, so no upload can stall the loop."""
    if sum(len(data) for data in uploads) > INLINE_MAX_BYTES:
        return False
    return all((declared_pixels(data) or INLINE_MAX_PIXELS + 1) <= INLINE_MAX_PIXELS for data in uploads)


def _refused(exc: UploadError) -> JSONResponse:
    record_rejection(exc.reason)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


# The web page at `/` (only that path goes to it; BentoML's own index page is behind it)
ImageClassifier.mount_asgi_app(page_app(), path="/")
# Limits, keys and Host names from IMGCLF_* variables (guard_config.py); built in each worker. Its
# refusals are counted by reason in /metrics.
ImageClassifier.add_asgi_middleware(RequestGuard, on_reject=record_rejection)


async def _answer_uploads(images: list[bytes], top_k: int) -> JSONResponse:
    return await bentoml.get_current_service().answer_uploads(images, top_k)


# Inside the guard: the HTTP requests of POST /predict, answered without BentoML's input layer
ImageClassifier.add_asgi_middleware(UploadRoute, answer=_answer_uploads)
