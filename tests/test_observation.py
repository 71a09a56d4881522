"""What the service keeps of each answered image (imgclf.serving.observation), run in process: the
probabilities are computed once per image, for its answer and its prediction log row alike."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from imgclf import scores
from imgclf.monitoring.log import read_window
from imgclf.serving import deployment

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def uploads(small_model, tmp_path_factory):
    """Three of the model's test images, as the upload files the service receives."""
    _, manifest = small_model
    folder = tmp_path_factory.mktemp("uploads")
    paths = []
    for i, relative in enumerate(manifest.subset("test").records["path"].head(3)):
        paths.append(folder / f"{i}.png")
        paths[-1].write_bytes((Path(manifest.root) / relative).read_bytes())
    return paths


@pytest.fixture
def service_env(servable_bundle, tmp_path, monkeypatch):
    """A service over the small model, logging to a fresh SQLite file and queueing nothing."""
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    monkeypatch.setenv(deployment.MODEL_DIR_ENV, str(servable_bundle))
    monkeypatch.setenv("IMGCLF_PREDICTION_LOG", url)
    monkeypatch.setenv("IMGCLF_LABEL_QUEUE", "off")
    return url


def _answer(service, uploads) -> list[dict]:
    answers = json.loads(asyncio.run(service.predict(image=uploads)).body)
    service.recorder.close()  # commits every row
    return answers


def test_each_image_probabilities_are_computed_once_for_its_answer_and_its_log_row(service_env, uploads, monkeypatch):
    from imgclf.serving.service import ImageClassifier

    service = ImageClassifier()
    calls: list[tuple[int, ...]] = []
    softmax = scores.softmax

    def counted(logits):
        calls.append(np.shape(logits))
        return softmax(logits)

    monkeypatch.setattr(scores, "softmax", counted)
    answers = _answer(service, uploads)
    classes = len(service.predictor.class_names)
    assert calls == [(3, classes)], "one softmax over the batch, none again per answer or per log row"
    rows = read_window(service_env)
    assert len(rows) == 3 and list(rows["label"]) == [a["label"] for a in answers]
    assert rows["confidence"].tolist() == [a["confidence"] for a in answers]  # the very numbers answered
    top2 = [sorted(t["confidence"] for t in a["top_k"])[-2:] for a in answers]
    assert rows["margin"].to_numpy() == pytest.approx([hi - lo for lo, hi in top2])


def test_with_the_log_off_no_image_statistics_are_computed_and_the_queue_still_gets_its_images(
    service_env, uploads, tmp_path, monkeypatch
):
    from imgclf.labelling.policy import QueuePolicy
    from imgclf.labelling.queue import LabelQueue
    from imgclf.serving import observation
    from imgclf.serving.service import ImageClassifier

    measured = []
    statistics = observation.image_statistics
    monkeypatch.setattr(observation, "image_statistics", lambda pixels: measured.append(1) or statistics(pixels))
    logged = ImageClassifier()
    assert logged.recorder.measures
    _answer(logged, uploads)
    assert len(measured) == 3 and read_window(service_env)["brightness"].between(0, 1).all()

    measured.clear()
    monkeypatch.setenv("IMGCLF_PREDICTION_LOG", "off")
    monkeypatch.delenv("IMGCLF_LABEL_QUEUE")
    quiet = ImageClassifier()
    assert not quiet.recorder.measures
    quiet.recorder.queue = LabelQueue(tmp_path / "queue", QueuePolicy(threshold=1.0))  # every answer is "uncertain"
    answers = _answer(quiet, uploads)
    quiet._decoders.shutdown(wait=True)  # the offers run on the decoding threads, after the answer
    assert measured == [], "nothing records the statistics, so none are computed"
    items = quiet.recorder.queue.items()
    assert len(items) == 3 and {i.predicted for i in items} == {a["label"] for a in answers}


def test_an_unmeasured_image_cannot_become_a_log_row(service_env, servable_bundle, uploads):
    from concurrent.futures import ThreadPoolExecutor

    from imgclf.monitoring.log import PredictionLog
    from imgclf.serving.observation import Recorder, observe
    from imgclf.serving.predictor import Predictor

    predictor = Predictor.from_path(servable_bundle)
    unmeasured = observe(predictor, uploads[0].read_bytes(), measure=False)
    assert unmeasured.statistics is None and len(unmeasured.sha256) == 64
    assert observe(predictor, uploads[0].read_bytes()).statistics is not None  # the log is on: measured
    probs = predictor.scores(predictor.predict_batch(unmeasured.input[None]))
    with ThreadPoolExecutor(1) as offload, PredictionLog(service_env) as log:
        recorder = Recorder(predictor, None, offload, log=log)
        with pytest.raises(ValueError, match="observed without its statistics but the prediction log is on"):
            recorder.record([unmeasured], probs, None, [predictor.scored_answer(probs[0])], "upload", 0.0)
