"""The request guard: unit tests drive the middleware with ASGI scope/receive/send (no server); the
`service` tests run the real BentoML service on 127.0.0.1 (one server for the module) with a tiny ONNX
model built here, so no training is needed."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import socket
from dataclasses import dataclass, field

import numpy as np
import pytest
from PIL import Image
from starlette.exceptions import HTTPException
from starlette.requests import Request

from imgclf.serving import deployment
from imgclf.serving.guard import RequestGuard
from imgclf.serving.guard_config import GuardConfig, GuardConfigError

KEY = "test-key-0123456789abcdef"
MiB = 1024 * 1024


def png(size: int = 40) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), 120, dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def form(*parts: tuple[str, bytes, str | None], boundary: str = "XyZ") -> tuple[bytes, str]:
    """(body, Content-Type) of a multipart form; a part is (name, value, filename or None for text)."""
    out = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict
    receives: int  # how many times the guard asked the client for body
    app_calls: list = field(default_factory=list)


class FormApp:
    """Stands in for BentoML: parses the form with Starlette (as BentoML does) and says what it saw."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    async def __call__(self, scope, receive, send) -> None:
        request = Request(scope, receive)
        seen = {"path": scope["path"], "content_type": request.headers.get("content-type")}
        if scope["method"] == "POST" and scope["path"] == "/predict/url":
            seen["json"] = await request.json()
        elif scope["method"] == "POST":
            parsed = await request.form()
            seen["fields"] = {k: (v if isinstance(v, str) else f"file:{v.filename}") for k, v in parsed.items()}
        self.calls.append(seen)
        body = json.dumps({"ok": True}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def call(guard, *, method="POST", path="/predict", headers=None, chunks=(), server=("127.0.0.1", 3000)) -> Answer:
    """One request through `guard`; `chunks` is any iterable of body pieces, pulled only when received."""
    headers = {"host": "127.0.0.1:3000", **(headers or {})}
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "server": server,
    }
    pieces, pulled, sent = iter(chunks), [0], []

    async def receive():
        pulled[0] += 1
        piece = next(pieces, None)
        if piece is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": piece, "more_body": True}

    async def send(message):
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(
        start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, json.loads(body or b"{}"), pulled[0]
    )


def guard_with(app=None, **config) -> RequestGuard:
    return RequestGuard(app or FormApp(), GuardConfig(**config))


def post(guard, body: bytes, content_type: str, **headers) -> Answer:
    return call(
        guard, headers={"content-type": content_type, "content-length": str(len(body)), **headers}, chunks=[body]
    )


# -- body size ------------------------------------------------------------------------------------


def test_a_declared_10_gib_body_is_refused_before_any_byte_is_read():
    app = FormApp()
    answer = call(
        guard_with(app),
        headers={"content-type": "multipart/form-data; boundary=x", "content-length": str(10 * 1024**3)},
        chunks=[b"never read"],
    )
    assert answer.status == 413 and "limit" in answer.body["error"]
    assert answer.receives == 0 and app.calls == []
    assert answer.headers["connection"] == "close"


def test_a_content_length_of_5000_digits_is_a_413_not_an_error():
    answer = call(
        guard_with(), headers={"content-type": "multipart/form-data; boundary=x", "content-length": "9" * 5000}
    )
    assert answer.status == 413 and answer.receives == 0


def test_a_chunked_60_mib_body_is_refused_as_soon_as_it_passes_the_cap():
    app = FormApp()
    cap, piece = 4 * MiB, 64 * 1024
    body, content_type = form(("image", b"\0" * 60 * MiB, "big.png"))
    chunks = (body[i : i + piece] for i in range(0, len(body), piece))  # lazily, as a slow client sends
    answer = call(
        guard_with(app, max_body_bytes=cap),
        headers={"content-type": content_type, "transfer-encoding": "chunked"},
        chunks=chunks,
    )
    assert answer.status == 413
    assert answer.receives == cap // piece + 1, "the guard read past the cap"
    assert app.calls == []


def test_a_body_that_stops_arriving_is_a_408():
    async def never_app(scope, receive, send):  # pragma: no cover - must not be reached
        raise AssertionError("the app was called")

    guard = RequestGuard(never_app, GuardConfig(body_timeout_s=0.05))
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "headers": [(b"host", b"localhost"), (b"content-type", b"multipart/form-data; boundary=x")],
        "server": ("127.0.0.1", 3000),
    }
    sent = []

    async def receive():
        await asyncio.Event().wait()

    async def send(message):
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    assert sent[0]["status"] == 408


# -- content types and forms ----------------------------------------------------------------------


def test_a_normal_upload_reaches_the_app_with_the_same_form():
    app = FormApp()
    body, content_type = form(("image", png(), "cat.png"), ("top_k", b"2", None))
    answer = post(guard_with(app), body, content_type)
    assert answer.status == 200, answer.body
    assert app.calls[0]["fields"] == {"image": "file:cat.png", "top_k": "2"}


def test_an_uppercase_media_type_is_passed_on_as_bentoml_expects_it():
    app = FormApp()
    body, content_type = form(("image", png(), "cat.png"))
    answer = post(guard_with(app), body, content_type.replace("multipart/form-data", "Multipart/Form-Data"))
    assert answer.status == 200 and app.calls[0]["content_type"].startswith("multipart/form-data;")


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/x-www-form-urlencoded", ""])
def test_other_content_types_are_415_with_a_reason(content_type):
    app = FormApp()
    headers = {"content-length": "13", **({"content-type": content_type} if content_type else {})}
    answer = call(guard_with(app), headers=headers, chunks=[b'{"image": 1}'])
    assert answer.status == 415 and "multipart/form-data" in answer.body["error"]
    assert app.calls == [] and answer.receives == 0


def test_a_body_sent_to_a_route_that_takes_none_is_415():
    answer = call(guard_with(), method="POST", path="/", headers={"content-length": "5"}, chunks=[b"hello"])
    assert answer.status == 415


@pytest.mark.parametrize(
    ("parts", "status", "words"),
    [
        ([("top_k", b"3", None)], 400, "no image field"),
        ([("image", b"https://example.com/cat.png", None)], 400, "must be a file upload"),
        ([("image", b"file:///etc/passwd", None)], 400, "must be a file upload"),
        ([("image", png(), "a.png"), ("top_k", b"1" * 2000, None)], 413, "over 1024 bytes"),
        ([("image", png(), "a.png"), ("top_k", b"9" * 1000, None), ("top_k", b"1", None)], 400, "more than once"),
        ([("image", png(), "a.png")] + [("image", b"x", "b.png")] * 64, 413, "more than 64 parts"),
        ([("image", png(), "a" * 241 + ".png")], 400, "filename is 245 bytes"),
        ([("image", png(), "é" * 120)], 400, "filename is 240 bytes"),
        ([("image", png(), "a.png"), ("debug", b"1", None)], 400, "unexpected form field"),
        ([("image", png(), "a.png"), ("top_k", b"3", "top_k.txt")], 400, "not a file"),
    ],
)
def test_each_form_limit_is_a_4xx_and_the_app_never_runs(parts, status, words):
    app = FormApp()
    body, content_type = form(*parts)
    answer = post(guard_with(app), body, content_type)
    assert answer.status == status and words in answer.body["error"], answer.body
    assert app.calls == []


def test_a_filename_within_the_limit_passes_in_unicode():
    body, content_type = form(("image", png(), "é" * 99 + ".png"))  # 202 bytes: over; 98 + 4 make 200
    assert post(guard_with(), body, content_type).status == 400
    body, content_type = form(("image", png(), "é" * 98 + ".png"))
    assert post(guard_with(), body, content_type).status == 200


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        (b"--XyZ\r\nContent-Disposition: form-data; name=image; filename=a.png\r\n\r\nabc", None, "ends before"),
        (b"hello", None, "not valid multipart"),
        (b"--XyZ\r\nContent-Disposition: attachment\r\n\r\nabc\r\n--XyZ--\r\n", None, "Content-Disposition"),
        (b"--XyZ\r\n\r\n", "multipart/form-data", "boundary"),
        (b"x", "multipart/form-data; boundary=" + "b" * 71, "boundary"),
        (b"x", "multipart/form-data; boundary=XyZ; charset=utf-7", "charset"),
    ],
)
def test_broken_multipart_is_a_4xx(body, content_type, words):
    answer = post(guard_with(), body, content_type or "multipart/form-data; boundary=XyZ")
    assert 400 <= answer.status < 500 and words in answer.body["error"], answer.body


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"url": "http://example.com/a.png"}', "application/json", 200),
        (b'{"url": "http://example.com/a.png"}', "Application/JSON", 200),
        (b'{"url": "' + b"a" * 9000 + b'"}', "application/json", 413),
        (b'["not", "an", "object"]', "application/json", 400),
        (b"[" * 8000, "application/json", 400),
        (b'{"url": 1}', "text/plain", 415),
    ],
)
def test_the_json_route_takes_a_small_json_object(body, content_type, status):
    app = FormApp()
    answer = call(
        guard_with(app),
        path="/predict/url",
        headers={"content-type": content_type, "content-length": str(len(body))},
        chunks=[body],
    )
    assert answer.status == status, answer.body
    assert app.calls == [] if status != 200 else app.calls[0]["json"] == {"url": "http://example.com/a.png"}


# -- failures inside the app ----------------------------------------------------------------------


@pytest.mark.parametrize(("error", "status"), [(HTTPException(400, "bad form"), 400), (RuntimeError("/srv/x"), 500)])
def test_an_exception_escaping_the_app_is_json_without_a_traceback(error, status):
    async def failing_app(scope, receive, send):
        raise error

    body, content_type = form(("image", png(), "a.png"))
    answer = post(RequestGuard(failing_app, GuardConfig()), body, content_type)
    assert answer.status == status and set(answer.body) == {"error"}
    assert "/srv" not in answer.body["error"] and "Traceback" not in answer.body["error"]


# -- keys, hosts, concurrency ---------------------------------------------------------------------


def test_a_non_loopback_bind_without_keys_refuses_to_start(monkeypatch, tmp_path):
    from imgclf.cli import main

    monkeypatch.delenv("IMGCLF_API_KEYS", raising=False)
    with pytest.raises(SystemExit, match=r"imgclf serve: refusing to serve on 0\.0\.0\.0 .* without API keys"):
        main(["serve", "--model", str(tmp_path / "absent.onnx"), "--host", "0.0.0.0"])
    with pytest.raises(GuardConfigError, match="without API keys"):
        RequestGuard(FormApp(), GuardConfig(bind_host="0.0.0.0"))
    with pytest.raises(GuardConfigError, match="IMGCLF_API_KEYS"):
        deployment.serve_command("/tmp/model.onnx", "1", "0.0.0.0", 3000)
    GuardConfig(bind_host="127.0.0.1").check_bind()


def test_keys_401_without_403_wrong_200_right_and_probes_stay_open():
    guard = guard_with(bind_host="0.0.0.0", api_keys=(KEY,), allowed_hosts=("api.example.org",))
    body, content_type = form(("image", png(), "a.png"))
    host = {"host": "api.example.org"}
    missing = post(guard, body, content_type, **host)
    assert missing.status == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert post(guard, body, content_type, authorization="Bearer wrong-key-0123456789", **host).status == 403
    assert post(guard, body, content_type, authorization=f"Bearer {KEY}", **host).status == 200
    assert post(guard, body, content_type, **{"x-api-key": KEY}, **host).status == 200
    assert call(guard, method="GET", path="/healthz", headers={"host": "10.0.0.9"}).status == 200


def test_keys_from_a_file_of_sha256_digests(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"# ops team\n{hashlib.sha256(KEY.encode()).hexdigest()}\n")
    guard = guard_with(api_keys_file=keys)
    assert call(guard, method="GET", path="/docs.json").status == 401
    assert call(guard, method="GET", path="/docs.json", headers={"x-api-key": KEY}).status == 200
    keys.write_text("not-a-digest\n")
    with pytest.raises(GuardConfigError, match=r"line 1 .* not a sha256"):
        GuardConfig.from_env({"IMGCLF_API_KEYS_FILE": str(keys)})


def test_settings_come_from_imgclf_variables_and_errors_name_them():
    config = GuardConfig.from_env({"IMGCLF_MAX_CONCURRENCY": "3", "IMGCLF_ALLOWED_HOSTS": "a.example, b.example"})
    assert config.max_concurrency == 3 and {"a.example", "b.example"} <= config.host_names
    with pytest.raises(GuardConfigError, match="IMGCLF_MAX_BODY_BYTES"):
        GuardConfig.from_env({"IMGCLF_MAX_BODY_BYTES": "lots"})
    with pytest.raises(GuardConfigError, match="shorter than 16"):
        GuardConfig.from_env({"IMGCLF_API_KEYS": "short"})


def test_a_request_arriving_on_a_public_address_needs_a_key_even_when_started_another_way():
    answer = call(
        guard_with(), method="GET", path="/docs.json", headers={"host": "10.0.0.5:3000"}, server=("10.0.0.5", 3000)
    )
    assert answer.status == 401


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("localhost:3000", 200),
        ("[::1]:3000", 200),
        ("127.0.0.1", 200),
        ("svc.internal", 200),
        ("evil.example", 400),
        ("", 400),
        ("localhost.evil.example", 400),
    ],
)
def test_the_host_header_must_name_this_service(host, status):
    guard = guard_with(allowed_hosts=("svc.internal",))
    answer = call(guard, method="GET", path="/docs.json", headers={"host": host})
    assert answer.status == status
    if status == 400:
        assert "host name" in answer.body["error"]


def test_overload_is_a_fast_429_with_retry_after():
    async def scenario():
        entered, release = asyncio.Semaphore(0), asyncio.Event()

        async def holding_app(scope, receive, send):
            entered.release()
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        guard = RequestGuard(holding_app, GuardConfig(max_concurrency=2, retry_after_s=2))

        async def request(path="/docs.json"):
            sent = []
            scope = {"type": "http", "method": "GET", "path": path, "headers": [(b"host", b"localhost")]}
            await guard(scope, None, _collect(sent))
            return sent[0]

        held = [asyncio.create_task(request()) for _ in range(2)]
        for _ in held:
            await entered.acquire()
        refused = await request()
        probe = asyncio.create_task(request("/healthz"))  # probes are not counted
        await entered.acquire()
        release.set()
        done = await asyncio.gather(*held, probe)
        after = await request()
        return refused, done, after

    refused, done, after = asyncio.run(scenario())
    assert refused["status"] == 429 and (b"retry-after", b"2") in refused["headers"]
    assert [m["status"] for m in done] == [200, 200, 200] and after["status"] == 200


def _collect(sent):
    async def send(message):
        sent.append(message)

    return send


# -- the real service -----------------------------------------------------------------------------


def tiny_onnx(path):
    """A 2-class ONNX model with imgclf's metadata (pool, matmul): enough to serve, nothing to train."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from imgclf.bundle import META_CLASS_NAMES, META_PREPROCESS
    from imgclf.preprocess import PreprocessSpec

    weights = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2), "w")
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 2])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    spec = PreprocessSpec(image_size=32).to_json()
    helper.set_model_props(model, {META_CLASS_NAMES: json.dumps(["cat", "dog"]), META_PREPROCESS: spec})
    onnx.save(model, str(path))
    return path


SERVICE_CAP = 2 * MiB


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from conftest import free_port

    model = tiny_onnx(tmp_path_factory.mktemp("tiny") / "model.onnx")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("IMGCLF_API_KEYS", KEY)
        env.setenv("IMGCLF_MAX_BODY_BYTES", str(SERVICE_CAP))
        running = deployment.start(model, "tiny", "3", deployment.DeployConfig(port=free_port(), ready_timeout_s=90))
    yield running
    deployment.stop(running.pid)


def raw_exchange(url: str, head: str, pieces=()) -> tuple[int, bytes]:
    """Send a request head (and body pieces) on a plain socket; read one response (status, body)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        conn.sendall(head.encode())
        for piece in pieces:
            conn.sendall(piece)
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536) or b"\r\n\r\n"
        top, _, rest = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in top.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
        )
        while len(rest) < length:
            more = conn.recv(65536)
            if not more:
                break
            rest += more
    return int(top.split(b" ")[1]), rest[:length]


@pytest.mark.service
def test_service_keeps_answering_uploads_behind_the_guard(server):
    import requests

    files = {"image": ("cat.png", png(), "image/png")}
    answer = requests.post(f"{server.url}/predict", files=files, headers={"X-API-Key": KEY}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["label"] in ("cat", "dog") and answer.json()["model_version"] == "3"
    assert requests.post(f"{server.url}/predict", files=files, timeout=30).status_code == 401
    assert requests.get(f"{server.url}/healthz", timeout=30).status_code == 200


@pytest.mark.service
def test_service_refuses_a_declared_10_gib_body_without_reading_it(server):
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\n"
        f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {10 * 1024**3}\r\n\r\n"
    )
    status, body = raw_exchange(server.url, head)  # not one body byte is sent
    assert status == 413 and b"limit" in body


@pytest.mark.service
def test_service_refuses_a_chunked_body_while_it_is_still_arriving(server):
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = 64 * 1024
    start = b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
    data = [start + b"\0" * (piece - len(start))] + [b"\0" * piece] * (SERVICE_CAP // piece)
    chunks = [f"{len(d):x}\r\n".encode() + d + b"\r\n" for d in data]
    status, _ = raw_exchange(server.url, head, chunks)  # the terminating chunk is never sent
    assert status == 413


def hostile_requests(url: str) -> list[tuple[str, dict]]:
    """(what, requests.request kwargs): the issue's server errors and other odd or hostile requests."""
    image = ("a.png", png(), "image/png")
    key = {"X-API-Key": KEY}

    def multipart(*parts, boundary="XyZ", content_type=None):
        body, ctype = form(*parts, boundary=boundary)
        return {"data": body, "headers": {**key, "Content-Type": content_type or ctype}}

    return [
        ("no image field", {"files": {"top_k": (None, "3")}, "headers": key}),
        ("missing boundary", multipart(("image", png(), "a.png"), content_type="multipart/form-data")),
        ("text field over 1 MB", multipart(("image", png(), "a.png"), ("top_k", b"1" * (MiB + 10), None))),
        ("1001 fields", multipart(*[("top_k", b"1", None)] * 1001)),
        ("250-byte filename", {"files": {"image": ("a" * 246 + ".png", png())}, "headers": key}),
        ("unicode filename", {"files": {"image": ("ф" * 125 + ".png", png())}, "headers": key}),
        ("file URL as image", {"files": {"image": (None, "file:///etc/passwd")}, "headers": key}),
        ("http URL as image", {"files": {"image": (None, f"{url}/healthz")}, "headers": key}),
        ("JSON with a file URL", {"json": {"image": "file:///etc/passwd"}, "headers": key}),
        ("pickle content type", {"data": b"x", "headers": {**key, "Content-Type": "application/vnd.bentoml+pickle"}}),
        ("empty multipart", {"data": b"", "headers": {**key, "Content-Type": "multipart/form-data; boundary=x"}}),
        (
            "truncated multipart",
            multipart(("image", png(), "a.png")) | {"data": form(("image", png(), "a.png"))[0][:80]},
        ),
        (
            "utf-7 charset",
            multipart(("image", png(), "a.png"), content_type="multipart/form-data; boundary=XyZ; charset=utf-7"),
        ),
        ("NUL in filename", multipart(("image", png(), "a\0.png"))),
        ("top_k not a number", {"files": {"image": image, "top_k": (None, "abc")}, "headers": key}),
        ("text instead of an image", {"files": {"image": ("a.png", b"hello", "image/png")}, "headers": key}),
        ("foreign Host", {"files": {"image": image}, "headers": {**key, "Host": "evil.example"}}),
        ("wrong key", {"files": {"image": image}, "headers": {"Authorization": "Bearer nope-nope-nope-nope"}}),
        ("body to the index page", {"data": b"x" * 10, "headers": key, "url": f"{url}/"}),
    ]


@pytest.mark.service
def test_service_answers_hostile_requests_with_4xx_json_and_no_internals(server):
    import requests

    for what, kwargs in hostile_requests(server.url):
        target = kwargs.pop("url", f"{server.url}/predict")
        answer = requests.post(target, timeout=30, **kwargs)
        assert 400 <= answer.status_code < 500, f"{what}: {answer.status_code} {answer.text[:200]}"
        assert "error" in answer.json(), what
        for leak in ("Traceback", "/tmp", "site-packages", "/etc/passwd"):
            assert leak not in answer.text, f"{what}: {leak} in {answer.text[:200]}"
