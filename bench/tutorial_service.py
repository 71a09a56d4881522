"""The service a user would write from the usual FastAPI + ONNX Runtime tutorial: one image per request,
decoded with PIL, squashed to the model's size, normalised with ImageNet statistics, one ORT call.
bench/service_load.py runs it beside ours on the same ONNX file (TUTORIAL_MODEL) and size (TUTORIAL_SIZE)."""

from __future__ import annotations

import io
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, UploadFile
from PIL import Image

SIZE = int(os.environ["TUTORIAL_SIZE"])
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
session = ort.InferenceSession(os.environ["TUTORIAL_MODEL"], providers=["CPUExecutionProvider"])
INPUT = session.get_inputs()[0].name
app = FastAPI()


@app.post("/predict")
async def predict(image: UploadFile) -> dict:
    picture = Image.open(io.BytesIO(await image.read())).convert("RGB").resize((SIZE, SIZE))
    x = ((np.asarray(picture, dtype=np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None]
    logits = session.run(None, {INPUT: x})[0][0]
    return {"label": int(logits.argmax()), "confidence": float(np.exp(logits.max()) / np.exp(logits).sum())}


@app.get("/healthz")
def healthz() -> dict:
    return {"ok": True}
