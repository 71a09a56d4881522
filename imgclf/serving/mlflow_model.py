"""MLflow pyfunc wrapper around a model bundle, logged as "models from code" so nothing is pickled.

`mlflow.pyfunc.load_model(uri).predict([image_bytes, ...])` returns one prediction dict per image.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class BundleModel(PythonModel):
    def load_context(self, context) -> None:
        from imgclf.serving.predictor import Predictor

        self.predictor = Predictor.from_path(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):
        items = model_input if isinstance(model_input, list) else list(model_input.iloc[:, 0])
        return [self.predictor.predict(item) for item in items]


mlflow.models.set_model(BundleModel())
