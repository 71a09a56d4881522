"""Prediction from an ONNX model (fp32 or INT8) with the PreprocessSpec and classes stored in the file.

Imports neither torch nor ZenML, so the service starts fast and ships small.
"""

from __future__ import annotations

from pathlib import Path

from imgclf.bundle import ONNX_INPUT, ONNX_OUTPUT, onnx_metadata, serving_model
from imgclf.data.decode import SERVING_LIMITS, DecodeLimits, open_image
from imgclf.serving.answers import answer

MAX_UPLOAD_BYTES = 20 * 1024 * 1024


class Predictor:
    def __init__(
        self, onnx_path: str | Path, model_version: str = "local", limits: DecodeLimits = SERVING_LIMITS
    ) -> None:
        import onnxruntime as ort

        self.onnx_path = Path(onnx_path)
        if not self.onnx_path.is_file():
            raise FileNotFoundError(f"no ONNX model at {self.onnx_path}")
        meta = onnx_metadata(self.onnx_path)
        self.class_names, self.spec, self.thresholds = meta.class_names, meta.preprocess, meta.thresholds
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one request at a time per worker; scale with workers
        self.session = ort.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])
        self.model_version = model_version
        self.limits = limits  # stricter than training's: uploads come from strangers

    @classmethod
    def from_path(cls, path: str | Path, model_version: str | None = None) -> Predictor:
        """A bundle folder (the ONNX file its spec says to serve, default model.onnx) or an .onnx file."""
        path = Path(path)
        return cls(path / serving_model(path) if path.is_dir() else path, model_version or "local")

    def predict(self, data: bytes, top_k: int = 3) -> dict:
        """Raw upload bytes -> {label, confidence, top_k, model_version} (multi-label models: also labels
        and scores, see imgclf.serving.answers). Bad input raises ImageRejected."""
        image, _ = open_image(data, limits=self.limits, draft_size=self.spec.draft_size(), source="upload")
        x = self.spec.normalize(self.spec.resize(image)[None])
        logits = self.session.run([ONNX_OUTPUT], {ONNX_INPUT: x})[0][0]
        return {**answer(logits, self.class_names, top_k, self.thresholds), "model_version": self.model_version}
