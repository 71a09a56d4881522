"""The HTTP service end to end: a real BentoML server on 127.0.0.1, started and stopped by the test."""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
import time
import urllib.request

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import free_port
from imgclf import paths
from imgclf.data.decode import ImageRejected
from imgclf.serving import deployment
from imgclf.serving.predictor import Predictor

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def test_images(small_model):
    """(png bytes, true label) for the first 10 test images."""
    _, manifest = small_model
    test = manifest.subset("test").records.head(10)
    root = manifest.root
    return [(open(f"{root}/{p}", "rb").read(), label) for p, label in zip(test["path"], test["label"])]


@pytest.fixture(scope="module")
def varied_images(small_model):
    """(png bytes, true label) for one test image of each class: answers that differ, so order shows."""
    _, manifest = small_model
    test = manifest.subset("test").records.groupby("label").head(1)
    return [(open(f"{manifest.root}/{p}", "rb").read(), label) for p, label in zip(test["path"], test["label"])]


def test_predictor_returns_ranked_probabilities(servable_bundle, test_images):
    predictor = Predictor.from_path(servable_bundle, "7")
    result = predictor.predict(test_images[0][0], top_k=3)
    assert set(result) == {"label", "confidence", "top_k", "model_version"}
    assert result["model_version"] == "7" and len(result["top_k"]) == 3
    confidences = [t["confidence"] for t in result["top_k"]]
    assert confidences == sorted(confidences, reverse=True) and result["label"] == result["top_k"][0]["label"]
    correct = sum(predictor.predict(data)["label"] == label for data, label in test_images)
    assert correct >= 8, f"only {correct}/10 test digits classified correctly"


def test_predictor_rejects_text_with_a_reason(servable_bundle):
    with pytest.raises(ImageRejected) as err:
        Predictor.from_path(servable_bundle).predict(b"hello, I am not an image")
    assert err.value.reason == "not_an_image"


@pytest.fixture(scope="module")
def prediction_log(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('log') / 'predictions.db'}"


@pytest.fixture(scope="module")
def server(servable_bundle, prediction_log):
    port = free_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("IMGCLF_PREDICTION_LOG", prediction_log)
        config = deployment.DeployConfig(port=port, ready_timeout_s=90)
        running = deployment.start(servable_bundle, "local-test", "42", config)
    yield running
    deployment.stop(running.pid)


def test_service_predicts_a_real_digit(server, test_images):
    correct = 0
    for data, label in test_images[:5]:
        response = requests.post(f"{server.url}/predict", files={"image": ("digit.png", data, "image/png")}, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == "42" and body["label"] in [str(d) for d in range(10)]
        assert 0 < body["confidence"] <= 1 and len(body["top_k"]) == 3
        correct += body["label"] == label
    assert correct >= 4


def test_top_k_is_read_from_the_form_and_a_bad_one_is_a_400(server, test_images):
    files = {"image": ("digit.png", test_images[0][0], "image/png")}
    answer = requests.post(f"{server.url}/predict", files=files, data={"top_k": "5"}, timeout=30)
    assert answer.status_code == 200 and len(answer.json()["top_k"]) == 5
    refused = requests.post(f"{server.url}/predict", files=files, data={"top_k": "five"}, timeout=30)
    assert refused.status_code == 400 and refused.json() == {"error": "top_k must be a whole number"}


def test_service_answers_400_for_text_and_broken_images(server, test_images):
    response = requests.post(
        f"{server.url}/predict", files={"image": ("notes.txt", b"just some text", "text/plain")}, timeout=30
    )
    assert response.status_code == 400 and "not_an_image" in response.json()["error"]
    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(png, format="PNG")
    truncated = png.getvalue()[:200]
    response = requests.post(f"{server.url}/predict", files={"image": ("cut.png", truncated, "image/png")}, timeout=30)
    assert response.status_code == 400 and "truncated" in response.json()["error"]


def test_service_health_and_stop(servable_bundle):
    port = free_port()
    running = deployment.start(servable_bundle, "local-test", "1", deployment.DeployConfig(port=port))
    with urllib.request.urlopen(f"{running.url}/healthz", timeout=5) as response:
        assert response.status == 200
    record = json.loads((paths.deployments_dir() / f"{port}.json").read_text())
    assert record["pid"] == running.pid
    assert deployment.stop_recorded(port)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{running.url}/healthz", timeout=5)


def test_deploy_refuses_a_port_in_use(servable_bundle):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {port} .* already in use"):
            deployment.start(servable_bundle, "local-test", "1", deployment.DeployConfig(port=port))


# -- batching and several images per request ---------------------------------------------------------


def same_answer(got: dict, expected: dict) -> bool:
    """Labels in the same order; probabilities equal up to float32 rounding (a batch may sum differently)."""
    return [t["label"] for t in got["top_k"]] == [t["label"] for t in expected["top_k"]] and all(
        a["confidence"] == pytest.approx(b["confidence"], abs=1e-4) for a, b in zip(got["top_k"], expected["top_k"])
    )


def test_predict_batch_answers_each_image_as_predict_does(servable_bundle, test_images):
    from imgclf.serving.batching import available_cores

    predictor = Predictor.from_path(servable_bundle, "7")
    batch = np.stack([predictor.prepare(data) for data, _ in test_images])
    logits = predictor.predict_batch(batch)
    assert logits.shape == (len(test_images), len(predictor.class_names))
    for row, (data, _) in zip(logits, test_images):
        assert same_answer(predictor.answer(row), predictor.predict(data))
    assert predictor.session.get_session_options().intra_op_num_threads == available_cores() == predictor.lanes
    if predictor.lanes > 1:  # the lanes' session runs on one core, side by side, with the same answers
        assert predictor.lane_session.get_session_options().intra_op_num_threads == 1
        np.testing.assert_allclose(predictor.predict_lane(batch), logits, rtol=1e-4, atol=1e-4)


def post_images(url: str, images: list[bytes], names: list[str] | None = None) -> requests.Response:
    names = names or [f"digit{i}.png" for i in range(len(images))]
    files = [("image", (name, data, "image/png")) for name, data in zip(names, images)]
    return requests.post(f"{url}/predict", files=files, timeout=60)


@pytest.fixture(scope="module")
def one_by_one(server, varied_images):
    """The service's answer to each image sent alone."""
    answers = [post_images(server.url, [data]) for data, _ in varied_images]
    assert all(a.status_code == 200 for a in answers)
    return [a.json() for a in answers]


def test_several_images_in_one_request_are_answered_in_order(server, varied_images, one_by_one):
    order = [3, 0, 7, 7, 1, 9, 4]
    response = post_images(server.url, [varied_images[i][0] for i in order])
    assert response.status_code == 200, response.text
    answers = response.json()
    assert isinstance(answers, list) and len(answers) == len(order)
    for got, i in zip(answers, order):
        assert same_answer(got, one_by_one[i]) and got["model_version"] == "42"
    labels = [one_by_one[i]["label"] for i in order]
    assert len(set(labels)) >= 4, f"the answers must differ for their order to show: {labels}"


def batch_histogram(url: str) -> tuple[float, float]:
    """(images, ORT runs) so far, from the imgclf_batch_size histogram."""
    text = requests.get(f"{url}/metrics", timeout=30).text
    found = {kind: re.search(rf"^imgclf_batch_size_{kind} (\S+)$", text, flags=re.M) for kind in ("sum", "count")}
    return tuple(float(m.group(1)) if m else 0.0 for m in (found["sum"], found["count"]))


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server, varied_images, one_by_one):
    images_before, runs_before = batch_histogram(server.url)
    threads, rounds = 16, 4
    start = threading.Barrier(threads)
    results: dict[tuple[int, int], tuple[int, tuple[int, dict]]] = {}

    def client(number: int) -> None:
        with requests.Session() as session:
            start.wait()
            for round_ in range(rounds):
                which = (number + round_) % len(varied_images)
                files = {"image": ("digit.png", varied_images[which][0], "image/png")}
                response = session.post(f"{server.url}/predict", files=files, timeout=60)
                results[number, round_] = which, (response.status_code, response.json())

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(results) == threads * rounds
    for which, (status, body) in results.values():
        assert status == 200 and same_answer(body, one_by_one[which]), body
    images, runs = batch_histogram(server.url)
    images, runs = images - images_before, runs - runs_before
    assert images == threads * rounds, "every image went through the model once"
    assert runs < images, f"{images:.0f} images took {runs:.0f} ORT runs: nothing was batched"


def test_a_bad_image_among_good_ones_is_a_400_naming_the_part(server, test_images):
    good = test_images[0][0]
    response = post_images(server.url, [good, b"just some text", good], ["a.png", "notes.txt", "b.png"])
    assert response.status_code == 400
    assert response.json()["error"].startswith("image 2 of 3 is not a usable image: not_an_image")
    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(png, format="PNG")
    cut = post_images(server.url, [good, good, png.getvalue()[:200]])
    assert cut.status_code == 400 and cut.json()["error"].startswith("image 3 of 3 is not a usable image: truncated")


def test_an_overloaded_model_is_a_503_with_retry_after(servable_bundle, test_images, monkeypatch, tmp_path):
    """An image that queued past IMGCLF_MAX_LATENCY_MS is refused; the client is told why and when to retry."""
    from imgclf.serving.service import ImageClassifier

    monkeypatch.setenv(deployment.MODEL_DIR_ENV, str(servable_bundle))
    monkeypatch.setenv("IMGCLF_MAX_LATENCY_MS", "10")
    service = ImageClassifier()  # in process
    upload = tmp_path / "digit.png"
    upload.write_bytes(test_images[0][0])
    answer = json.loads(asyncio.run(service.predict(image=[upload])).body)
    assert same_answer(answer, Predictor.from_path(servable_bundle).predict(test_images[0][0]))
    assert asyncio.run(service.predict(image=[])).status_code == 400

    gate = threading.Event()
    batcher = service.batcher
    alone, lane = batcher.run_alone, batcher.run_lane
    batcher.run_alone = lambda images: (gate.wait(10), alone(images))[1]
    batcher.run_lane = lambda images: (gate.wait(10), lane(images))[1]

    async def overload():
        first = asyncio.create_task(service.predict(image=[upload]))  # holds every lane
        await asyncio.sleep(0.05)
        late = asyncio.create_task(service.predict(image=[upload, upload]))
        await asyncio.sleep(0.1)
        gate.set()
        return await first, await late

    first, late = asyncio.run(overload())
    assert first.status_code == 200 and same_answer(json.loads(first.body), answer)
    assert late.status_code == 503 and late.headers["Retry-After"] == "1"
    assert json.loads(late.body)["error"].startswith("the model is busy (queued longer than 10 ms)")


def test_small_uploads_decode_on_the_loop_and_large_or_unreadable_ones_in_a_thread(server, test_images):
    from imgclf.data.decode import declared_pixels
    from imgclf.serving.service import INLINE_MAX_PIXELS, _cheap_to_decode

    small = test_images[0][0]
    assert declared_pixels(small) <= INLINE_MAX_PIXELS and _cheap_to_decode([small])
    buffer = io.BytesIO()
    Image.open(io.BytesIO(small)).resize((300, 300)).save(buffer, format="PNG")
    big = buffer.getvalue()
    assert declared_pixels(big) == 90_000 and not _cheap_to_decode([small, big])
    assert declared_pixels(b"just some text") is None and not _cheap_to_decode([b"just some text"])
    # both paths give the model's answer: the thread path for the enlarged digit
    response = post_images(server.url, [big, small])
    assert response.status_code == 200
    big_answer, small_answer = response.json()
    assert big_answer["label"] == small_answer["label"] == post_images(server.url, [small]).json()["label"]


def logged_rows(url: str, ready):
    """The prediction log once `ready(rows)` holds (it commits within a second), or as it is after 15 s."""
    from imgclf.monitoring.log import read_window

    deadline = time.monotonic() + 15
    while True:
        rows = read_window(url)
        if ready(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_every_answered_image_is_one_row_of_the_prediction_log(server, prediction_log, varied_images, servable_bundle):
    import hashlib

    def fresh(data: bytes) -> bytes:
        """The same pixels as bytes no other test sends, so this test's rows are told apart by sha256."""
        out = io.BytesIO()
        Image.open(io.BytesIO(data)).save(out, format="PNG", compress_level=1)
        return out.getvalue()

    images = [fresh(data) for data, _ in varied_images[:3]]
    single = post_images(server.url, images[:1])
    several = post_images(server.url, images)
    refused = post_images(server.url, [images[1], b"just some text"])
    assert (single.status_code, several.status_code, refused.status_code) == (200, 200, 400)
    digests = [hashlib.sha256(d).hexdigest() for d in images[:1] + images]
    rows = logged_rows(prediction_log, lambda r: r["sha256"].isin(digests).sum() >= 4)
    rows = rows[rows["sha256"].isin(digests)]
    assert len(rows) == 4, "one row per answered image; the refused request logs nothing"
    assert rows["request_id"].nunique() == 2 and set(rows["source"]) == {"upload"}
    assert list(rows["sha256"]) == digests
    assert list(rows["label"]) == [single.json()["label"]] + [a["label"] for a in several.json()]
    assert set(rows["model_version"]) == {"42"} and (rows["latency_ms"] > 0).all()
    assert rows["brightness"].between(0, 1).all() and (rows["margin"] >= 0).all() and (rows["width"] > 0).all()
    dim = Predictor.from_path(servable_bundle).embedding_dim
    assert dim and all(len(e) == dim for e in rows["embedding"]), "the model's embedding, logged for drift"


def test_an_uncertain_answer_is_offered_to_the_label_queue_off_the_request(
    servable_bundle, test_images, tmp_path, monkeypatch
):
    from imgclf.labelling.policy import QueuePolicy
    from imgclf.labelling.queue import LabelQueue
    from imgclf.serving.service import ImageClassifier

    monkeypatch.setenv(deployment.MODEL_DIR_ENV, str(servable_bundle))
    monkeypatch.setenv("IMGCLF_PREDICTION_LOG", "off")
    monkeypatch.setenv("IMGCLF_LABEL_QUEUE", "off")
    assert ImageClassifier().recorder.queue is None
    monkeypatch.delenv("IMGCLF_LABEL_QUEUE")
    service = ImageClassifier()
    service.recorder.queue = LabelQueue(tmp_path / "queue", QueuePolicy(threshold=1.0))  # every answer is "uncertain"
    uploads = []
    for i, (data, _) in enumerate(test_images[:3]):
        uploads.append(tmp_path / f"{i}.png")
        uploads[-1].write_bytes(data)
    answers = json.loads(asyncio.run(service.predict(image=uploads)).body)
    service._decoders.shutdown(wait=True)  # the offers run on the decoding threads, after the answer
    items = service.recorder.queue.items()
    assert len(items) == 3 and {i.predicted for i in items} == {a["label"] for a in answers}
    strict = ImageClassifier()
    strict.recorder.queue = LabelQueue(tmp_path / "strict", QueuePolicy(threshold=0.0))  # nothing is uncertain enough
    asyncio.run(strict.predict(image=uploads))
    strict._decoders.shutdown(wait=True)
    assert strict.recorder.queue.items() == []
