"""The request guard: a pure ASGI middleware in front of the BentoML app (added with BentoML's own
`add_asgi_middleware`), so a client's mistake is a 4xx JSON `{"error": reason}` before BentoML sees it.

Order: probes pass; Host header; API key; concurrency (429); route and Content-Type (415); declared
Content-Length (413 before any byte is read); the body, counted as it arrives (413 as soon as it passes
the cap) and stream-parsed; then the buffered body is replayed to the app.

Multipart is checked by form_check.FormCheck (python_multipart, as Starlette parses it). The body is
buffered up to the cap and then replayed: the form's faults (a missing `image`) show only at its end,
and the app must not have seen a byte of a body the guard refuses.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from imgclf.serving.form_check import FormCheck, JsonCheck, Reject
from imgclf.serving.guard_config import PAGE_PATH, GuardConfig, JsonRule, is_loopback

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MULTIPART = "multipart/form-data"
JSON = "application/json"
_CHARSETS = {"utf-8", "ascii"}
logger = logging.getLogger(__name__)


class _Disconnected(Exception):
    """The client went away while sending the body: nobody to answer."""


def _headers(scope: Scope) -> dict[bytes, list[bytes]]:
    found: dict[bytes, list[bytes]] = {}
    for name, value in scope.get("headers", ()):
        found.setdefault(name.lower(), []).append(value)
    return found


def _one(headers: dict[bytes, list[bytes]], name: bytes) -> bytes | None:
    values = headers.get(name, [])
    if len(values) > 1:
        raise Reject(400, "repeated_header", f"the {name.decode()} header is given more than once")
    return values[0] if values else None


def _host_name(host: bytes) -> str:
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text
    name, _, port = text.rpartition(":")
    return (name if name and port.isdigit() else text).rstrip(".")


class RequestGuard:
    """The middleware. `config` defaults to `GuardConfig.from_env()`; `on_reject(code)` sees every refusal."""

    def __init__(
        self, app: ASGIApp, config: GuardConfig | None = None, on_reject: Callable[[str], None] | None = None
    ) -> None:
        self.app = app
        self.config = config if config is not None else GuardConfig.from_env()
        self.config.check_bind()
        self.on_reject = on_reject
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        page = scope["path"] == PAGE_PATH and scope.get("method") in ("GET", "HEAD")
        if scope["path"] in self.config.open_paths or page:
            return await self._run(scope, receive, send)
        try:
            headers = _headers(scope)
            self._check_host(scope, headers)
            self._check_key(scope, headers)
            if self.in_flight >= self.config.max_concurrency:
                retry = str(self.config.retry_after_s).encode()
                raise Reject(
                    429, "overloaded", "too many requests in flight; retry shortly", ((b"retry-after", retry),)
                )
        except Reject as reject:
            return await self._reject(scope, send, reject)
        self.in_flight += 1
        try:
            await self._guarded(scope, receive, send, headers)
        finally:
            self.in_flight -= 1

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, list[bytes]]) -> None:
        try:
            form = self._check_route(scope, headers)
            if form is not None:
                body = await self._read_body(receive, form)
                receive = _replay(body, receive)
        except _Disconnected:
            return
        except Reject as reject:
            return await self._reject(scope, send, reject, close=True)
        await self._run(scope, receive, send)

    def _check_host(self, scope: Scope, headers: dict[bytes, list[bytes]]) -> None:
        host = _one(headers, b"host")
        if host is None:
            raise Reject(400, "bad_host", "the request has no Host header")
        name = _host_name(host)
        server = scope.get("server") or ("",)
        if not name or (name not in self.config.host_names and name != str(server[0]).lower()):
            raise Reject(400, "bad_host", f"this service does not answer to the host name {name[:100]!r}")

    def _check_key(self, scope: Scope, headers: dict[bytes, list[bytes]]) -> None:
        server = scope.get("server") or ("127.0.0.1",)
        if not self.config.keys_required and is_loopback(str(server[0])):
            return
        key = _one(headers, b"x-api-key")
        authorization = _one(headers, b"authorization")
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                key = token.strip()
        if key is None:
            challenge = ((b"www-authenticate", b'Bearer realm="imgclf"'),)
            raise Reject(401, "no_key", "an API key is required: Authorization: Bearer <key> or X-API-Key", challenge)
        digest = hashlib.sha256(key).digest()
        matched = False
        for known in self.config.key_hashes:  # every digest is compared: no early exit
            matched |= hmac.compare_digest(digest, known)
        if not matched:
            raise Reject(403, "bad_key", "the API key is not valid")

    def _check_route(self, scope: Scope, headers: dict[bytes, list[bytes]]) -> FormCheck | JsonCheck | None:
        """The body check for a route that takes a body; None for a request without one."""
        length = _one(headers, b"content-length")
        chunked = b"chunked" in b",".join(headers.get(b"transfer-encoding", [])).lower()
        if length is not None and not length.strip().isdigit():
            raise Reject(400, "bad_length", "the Content-Length header is not a number")
        digits = length.strip() if length is not None else b"0"  # int() of 5000 digits would raise
        declared = int(digits) if len(digits) <= 18 else self.config.max_body_bytes + 1
        rule = self.config.routes.get(scope["path"]) if scope["method"] == "POST" else None
        if rule is None:
            if declared or chunked:
                raise Reject(415, "unexpected_body", f"{scope['method']} {scope['path'][:100]} takes no request body")
            return None
        if declared > self.config.max_body_bytes:
            raise Reject(413, "body_too_large", self._too_large(declared))
        raw = _one(headers, b"content-type") or b""
        media, params = parse_options_header(raw)
        if isinstance(rule, JsonRule):
            return self._check_json(scope, raw, media, declared, rule)
        if media != MULTIPART.encode():
            got = raw.decode("latin-1")[:80] or "no Content-Type"
            raise Reject(415, "bad_content_type", f"POST {scope['path']} takes {MULTIPART}; got {got}")
        charset = params.get(b"charset", b"utf-8").decode("latin-1").lower()
        if not _known(charset) or codecs.lookup(charset).name not in _CHARSETS:
            raise Reject(415, "bad_charset", f"charset {charset[:40]!r} is not supported; send utf-8")
        boundary = params.get(b"boundary")
        if not boundary or len(boundary) > 70:
            raise Reject(400, "bad_boundary", "the multipart Content-Type needs a boundary of 1 to 70 characters")
        if raw.split(b";", 1)[0].strip() != MULTIPART.encode():  # BentoML matches the media type case-sensitively
            _set_header(scope, b"content-type", MULTIPART.encode() + b";" + raw.split(b";", 1)[1])
        return FormCheck(rule, self.config, boundary, codecs.lookup(charset).name)

    def _check_json(self, scope: Scope, raw: bytes, media: bytes, declared: int, rule: JsonRule) -> JsonCheck:
        if media != JSON.encode():
            got = raw.decode("latin-1")[:80] or "no Content-Type"
            raise Reject(415, "bad_content_type", f"POST {scope['path'][:100]} takes {JSON}; got {got}")
        if declared > rule.max_bytes:
            raise Reject(413, "body_too_large", f"the JSON body is {declared} bytes; the limit is {rule.max_bytes}")
        if raw.split(b";", 1)[0].strip() != JSON.encode():  # BentoML matches the media type case-sensitively
            _set_header(scope, b"content-type", JSON.encode())
        return JsonCheck(rule)

    def _too_large(self, size: int | str) -> str:
        return f"the request body is {size} bytes; the limit is {self.config.max_body_bytes}"

    async def _read_body(self, receive: Receive, form: FormCheck | JsonCheck) -> bytes:
        """The whole body, counted as it arrives and parsed part by part; stops at the first refusal."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.body_timeout_s
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except TimeoutError:
                limit = self.config.body_timeout_s
                raise Reject(408, "body_timeout", f"the body did not arrive within {limit:g} s") from None
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.config.max_body_bytes:
                raise Reject(413, "body_too_large", self._too_large(f"over {self.config.max_body_bytes}"))
            form.feed(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        form.finish()
        return b"".join(chunks)

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app, so that an exception escaping it is never a traceback: a client's fault maps to its 4xx."""
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            reject = _client_fault(exc)
            if reject is None:
                logger.exception("unhandled error answering %s %r", scope.get("method"), scope.get("path"))
                reject = Reject(500, "internal", "internal error; the server log has the details")
            if not started:
                await self._reject(scope, send, reject)

    async def _reject(self, scope: Scope, send: Send, reject: Reject, close: bool = False) -> None:
        if self.on_reject is not None:
            self.on_reject(reject.code)
        logger.info("refused %s %r: %s (%s)", scope.get("method"), scope.get("path"), reject.status, reject.code)
        body = json.dumps({"error": reject.message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [*reject.headers, *([(b"connection", b"close")] if close else [])]
        await send({"type": "http.response.start", "status": reject.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _known(charset: str) -> bool:
    try:
        codecs.lookup(charset)
    except LookupError:
        return False
    return True


def _set_header(scope: Scope, name: bytes, value: bytes) -> None:
    scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != name] + [(name, value)]


def _replay(body: bytes, receive: Receive) -> Receive:
    """The buffered body as one message; later calls (disconnect detection) go to the server."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _client_fault(exc: Exception) -> Reject | None:
    """The 4xx for an exception that a client's request caused, if it is one of those."""
    from pydantic import ValidationError
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException
    from starlette.requests import ClientDisconnect

    if isinstance(exc, ClientDisconnect):
        return Reject(400, "disconnected", "the client disconnected")
    if isinstance(exc, HTTPException) and 400 <= exc.status_code < 500:
        return Reject(exc.status_code, "app_client_error", str(exc.detail)[:200])
    if isinstance(exc, MultiPartException | FormParserError):
        return Reject(400, "bad_multipart", "the body is not valid multipart/form-data")
    if isinstance(exc, ValidationError):
        return Reject(400, "invalid_input", f"{exc.error_count()} input value(s) are not valid")
    return None
