"""The multipart/form-data check of the request guard: python_multipart (the parser Starlette, hence
BentoML, uses) with Starlette's own header and charset rules, so it sees the same parts the app will. A
parser of our own could disagree with the app's, and a disagreement is where a request slips past a check.
It stops at the first part over a limit, so the rest of a bad body is never read.
"""

from __future__ import annotations

import json

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from imgclf.serving.guard_config import FormRule, GuardConfig, JsonRule


class Reject(Exception):
    """A request the guard answers itself: status, a short code (for logs and metrics) and the reason."""

    def __init__(self, status: int, code: str, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _decode(value: bytes, charset: str) -> str:
    """Starlette's `_user_safe_decode`: the form's charset, else latin-1."""
    try:
        return value.decode(charset)
    except (UnicodeDecodeError, LookupError):
        return value.decode("latin-1")


class FormCheck:
    """Feeds a multipart body to python_multipart and raises Reject at the first part over a limit."""

    def __init__(self, rule: FormRule, config: GuardConfig, boundary: bytes, charset: str) -> None:
        self.rule, self.config, self.charset = rule, config, charset
        self.parts = 0
        self.seen: list[str] = []
        self.ended = False
        self._header_bytes = 0
        self._name, self._value = b"", b""
        self._disposition = b""
        self._text_bytes: int | None = None  # None while in a file part
        callbacks = {
            "on_part_begin": self._part_begin,
            "on_part_data": self._part_data,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_end": self._end,
        }
        self.parser = MultipartParser(boundary, callbacks)

    def feed(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except FormParserError:
            raise Reject(400, "bad_multipart", "the body is not valid multipart/form-data") from None

    def finish(self) -> None:
        if not self.ended:
            raise Reject(400, "bad_multipart", "the multipart body ends before its closing boundary")
        missing = [name for name in self.rule.required if name not in self.seen]
        if missing:
            raise Reject(400, "missing_field", f"the form has no {', '.join(missing)} field: upload it as a file part")

    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.config.max_parts:
            raise Reject(413, "too_many_parts", f"the form has more than {self.config.max_parts} parts")
        self._header_bytes, self._disposition, self._text_bytes = 0, b"", None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._value += data[start:end]

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.config.max_part_header_bytes:
            limit = self.config.max_part_header_bytes
            raise Reject(400, "part_headers_too_large", f"a form part's headers exceed {limit} bytes")

    def _header_end(self) -> None:
        if self._name.lower() == b"content-disposition":
            self._disposition = self._value
        self._name, self._value = b"", b""

    def _headers_finished(self) -> None:
        kind, options = parse_options_header(self._disposition)
        if kind != b"form-data" or b"name" not in options:
            raise Reject(400, "bad_part", 'every form part needs a Content-Disposition: form-data; name="..."')
        name = _decode(options[b"name"], self.charset)
        allowed = (*self.rule.files, *self.rule.texts)
        if name not in allowed:
            raise Reject(400, "unexpected_field", f"unexpected form field {name[:64]!r}; this route takes {allowed}")
        if name in self.rule.files:
            self._check_file_part(name, options.get(b"filename"))
        else:
            if b"filename" in options:
                raise Reject(400, "file_for_text", f"the form field {name} is a short text value, not a file")
            if name in self.seen:
                raise Reject(400, "repeated_field", f"the form field {name} is given more than once")
            self._text_bytes = 0
        self.seen.append(name)

    def _check_file_part(self, name: str, raw_filename: bytes | None) -> None:
        if raw_filename is None:
            raise Reject(
                400,
                "text_for_file",
                f"the form field {name} must be a file upload (a part with a filename), not a text value: "
                "URLs and paths given as text are not fetched",
            )
        filename = _decode(raw_filename, self.charset)
        try:
            size = len(filename.encode("utf-8"))
        except UnicodeEncodeError:
            raise Reject(400, "bad_filename", "the upload's filename is not valid text") from None
        if size > self.config.max_filename_bytes:
            limit = self.config.max_filename_bytes
            raise Reject(400, "filename_too_long", f"the upload's filename is {size} bytes; the limit is {limit}")
        if any(ord(c) < 32 or ord(c) == 127 for c in filename):
            raise Reject(400, "bad_filename", "the upload's filename holds control characters")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._text_bytes is None:
            return
        self._text_bytes += end - start
        if self._text_bytes > self.config.max_field_bytes:
            limit = self.config.max_field_bytes
            raise Reject(413, "field_too_large", f"a text form field is over {limit} bytes")

    def _end(self) -> None:
        self.ended = True


class JsonCheck:
    """A JSON route's body: at most the rule's bytes, and a JSON object (what BentoML's JSON input takes)."""

    def __init__(self, rule: JsonRule) -> None:
        self.rule = rule
        self.chunks: list[bytes] = []
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.rule.max_bytes:
            raise Reject(413, "body_too_large", f"the JSON body is over {self.rule.max_bytes} bytes")
        self.chunks.append(chunk)

    def finish(self) -> None:
        try:
            value = json.loads(b"".join(self.chunks))
        except (ValueError, RecursionError):
            raise Reject(400, "bad_json", "the body is not valid JSON") from None
        if not isinstance(value, dict):
            raise Reject(400, "bad_json", "the body must be a JSON object")
