"""Prediction from an ONNX model (fp32 or INT8) with the PreprocessSpec and classes stored in the file.

Three parts so a service can batch: `prepare` decodes one upload (per request, in a worker thread),
`predict_batch` is one ORT run over prepared images (the only batched work), `answer` turns one image's
logits into the reply. Imports neither torch nor ZenML, so the service starts fast and ships small.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgclf.bundle import ONNX_EMBEDDING, ONNX_INPUT, ONNX_OUTPUT, onnx_metadata, serving_model
from imgclf.data.decode import SERVING_LIMITS, DecodeLimits, ImageInfo, open_image
from imgclf.scores import probabilities
from imgclf.serving.answers import answer, scored_answer
from imgclf.serving.batching import available_cores

MAX_UPLOAD_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class Decoded:
    """One upload decoded: `pixels` (H, W, 3) uint8 at the model's input size, before normalisation (what
    the monitoring statistics are computed on), and `info` (format, mode, size as stored)."""

    pixels: np.ndarray
    info: ImageInfo


class Predictor:
    def __init__(
        self,
        onnx_path: str | Path,
        model_version: str = "local",
        limits: DecodeLimits = SERVING_LIMITS,
        threads: int | None = None,
    ) -> None:
        self.onnx_path = Path(onnx_path)
        if not self.onnx_path.is_file():
            raise FileNotFoundError(f"no ONNX model at {self.onnx_path}")
        meta = onnx_metadata(self.onnx_path)
        self.class_names, self.spec, self.thresholds = meta.class_names, meta.preprocess, meta.thresholds
        self.embedding_dim = meta.embedding_dim  # None: the model has no embedding output
        self.outputs = [ONNX_OUTPUT] + ([ONNX_EMBEDDING] if self.embedding_dim else [])
        cores = threads or available_cores()
        # one session for a lone image on every core this process may use (not every core of the host:
        # a container's CPU limit or a taskset counts), one single-threaded for the lanes that run at once
        self.session = self._session(cores)
        self.lane_session = self._session(1) if cores > 1 else self.session
        self.lanes = cores
        self.model_version = model_version
        self.limits = limits  # stricter than training's: uploads come from strangers

    def _session(self, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        return ort.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])

    @classmethod
    def from_path(cls, path: str | Path, model_version: str | None = None, **options) -> Predictor:
        """A bundle folder (the ONNX file its spec says to serve, default model.onnx) or an .onnx file."""
        path = Path(path)
        return cls(path / serving_model(path) if path.is_dir() else path, model_version or "local", **options)

    def decode(self, data: bytes) -> Decoded:
        """Raw upload bytes -> the image at model size (uint8) and what its header declared. Bad input
        raises ImageRejected."""
        image, info = open_image(data, limits=self.limits, draft_size=self.spec.draft_size(), source="upload")
        return Decoded(self.spec.resize(image), info)

    def prepare(self, data: bytes) -> np.ndarray:
        """Raw upload bytes -> one normalized (C, H, W) float32 image. Bad input raises ImageRejected."""
        return self.spec.normalize(self.decode(data).pixels[None])[0]

    def run_alone(self, images: np.ndarray) -> np.ndarray:
        """(N, C, H, W) prepared images -> (N, classes [+ D]): the logits, then the embedding when the model
        has one, as one array so the batcher need not know. One ORT run on every core."""
        return self._run(self.session, images)

    def run_lane(self, images: np.ndarray) -> np.ndarray:
        """As run_alone on one core, so `lanes` of these run side by side (thread-safe: ORT sessions are)."""
        return self._run(self.lane_session, images)

    def _run(self, session, images: np.ndarray) -> np.ndarray:
        out = session.run(self.outputs, {ONNX_INPUT: np.ascontiguousarray(images, dtype=np.float32)})
        return out[0] if len(out) == 1 else np.concatenate(out, axis=-1)

    def split(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """run_alone's or run_lane's array -> (logits, embeddings or None)."""
        classes = len(self.class_names)
        return outputs[..., :classes], (outputs[..., classes:] if self.embedding_dim else None)

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """(N, C, H, W) prepared images -> (N, classes) logits, one ORT run on every core."""
        return self.split(self.run_alone(images))[0]

    def predict_lane(self, images: np.ndarray) -> np.ndarray:
        """As predict_batch on one core."""
        return self.split(self.run_lane(images))[0]

    def answer(self, logits: np.ndarray, top_k: int = 3) -> dict:
        """One image's logits -> {label, confidence, top_k, model_version} (multi-label models: also labels
        and scores, see imgclf.serving.answers)."""
        return {**answer(logits, self.class_names, top_k, self.thresholds), "model_version": self.model_version}

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """Logits (C,) or (N, C) -> the scores the answers give: softmax, or a multi-label model's sigmoid."""
        return probabilities(logits, multi_label=self.thresholds is not None)

    def scored_answer(self, scores: np.ndarray, top_k: int = 3) -> dict:
        """As `answer`, from one image's `scores` (computed once for a batch, answer and log alike)."""
        return {**scored_answer(scores, self.class_names, top_k, self.thresholds), "model_version": self.model_version}

    def predict(self, data: bytes, top_k: int = 3) -> dict:
        """Raw upload bytes -> the answer, unbatched. Bad input raises ImageRejected."""
        return self.answer(self.predict_batch(self.prepare(data)[None])[0], top_k)
