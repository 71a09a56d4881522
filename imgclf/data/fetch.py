"""A guarded URL fetcher for URLs that someone else chose (a data source, an image to classify).

Why our own: `urlopen`/requests resolve the name again at connect time (DNS rebinding), follow redirects
to loopback or the metadata address, honour proxy variables, and have no total deadline or byte cap; the
SSRF add-on for requests (`advocate`) is unmaintained. This is stdlib only (http.client + ssl).

Rules: http(s) only, no credentials in the URL, an optional host allow-list; the host resolved once and
refused unless every address is global (private only by policy; metadata/link-local never); connect to a
checked address, the name in Host and TLS (SNI, certificate); every redirect hop checked again; timeouts and
a total deadline, the DNS lookup included; a byte cap while streaming; an optional sha256 pin. Messages
carry only `redact(url)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import ipaddress
import logging
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urljoin, urlsplit

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, field_validator

from imgclf.data.addresses import DEFAULT_BLOCKED, IPAddress, refusal

log = logging.getLogger(__name__)

Sink = Callable[[bytes], object]
Response = http.client.HTTPResponse
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CHUNK = 64 * 1024


class FetchRefused(ValueError):
    """A fetch was refused or failed; `reason` is a short code a service maps to a 4xx, `detail` is
    safe to show (the URL in it is redacted)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{detail} [{reason}]")
        self.reason = reason
        self.detail = detail


class FetchPolicy(BaseModel):
    """What a fetch may do. Defaults suit one image for the service; a data download raises the caps."""

    model_config = ConfigDict(extra="forbid")

    schemes: list[Literal["http", "https"]] = Field(["http", "https"], min_length=1)
    allow_private: bool = Field(False, description="also allow loopback, RFC 1918, CGNAT and ULA addresses")
    allowed_hosts: list[str] | None = Field(
        None, description="host names (or a leading '.' for a domain and its subdomains) that may be fetched"
    )
    blocked_networks: list[IPvAnyNetwork] = Field(
        [ipaddress.ip_network(n) for n in DEFAULT_BLOCKED], description="refused even with allow_private"
    )
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(10.0, gt=0, description="longest wait for any one read")
    deadline_s: float = Field(30.0, gt=0, description="the whole fetch, redirects included")
    max_bytes: int = Field(20 * 1024**2, ge=1)
    max_redirects: int = Field(3, ge=0, le=20, description="0 refuses any redirect")
    sha256: str | None = Field(None, pattern="^[0-9a-fA-F]{64}$", description="pin: refuse other content")

    @field_validator("allowed_hosts")
    @classmethod
    def _normalise_hosts(cls, hosts: list[str] | None) -> list[str] | None:
        return None if hosts is None else [h.strip().strip("[]").lower().rstrip(".") for h in hosts if h.strip()]


@dataclass(frozen=True)
class FetchResult:
    url: str  # redacted, as asked
    final_url: str  # redacted, after redirects
    content_type: str
    size: int
    sha256: str
    data: bytes | None = None  # fetch_bytes only
    path: Path | None = None  # fetch_to_file only


@dataclass(frozen=True)
class CheckedURL:
    """A URL that passed every check, with the addresses its host resolved to (all of them allowed)."""

    scheme: str
    host: str  # ASCII (IDNA) form, lower case
    port: int
    target: str  # path and query sent in the request line
    addresses: tuple[IPAddress, ...]


def redact(url: str) -> str:
    """scheme://host[:port]/path: no user info, no query, no fragment. Safe to log and to show."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme.lower()}://{host}{f':{port}' if port else ''}{parts.path}"


def loggable(source: str) -> str:
    """A data source as it may be recorded: an http(s) URL redacted, anything else as given."""
    return redact(source) if source.lower().startswith(("http://", "https://")) else source


def _host_allowed(host: str, allowed: list[str] | None) -> bool:
    """Exact names; an entry with a leading '.' also takes subdomains, of names only (a host whose last
    label is numeric is an IPv4 spelling, as URL parsers read it, so '.0.1' never matches 127.0.0.1)."""
    last = host.rsplit(".", 1)[-1].lower()
    is_name = ":" not in host and not (last.isdigit() or last.startswith("0x"))
    domains = [e for e in allowed or () if e.startswith(".") and (host.endswith(e) or host == e[1:])]
    return allowed is None or host in allowed or (is_name and bool(domains))


class _Resolver:
    """getaddrinfo under a deadline: the C call cannot be interrupted, so it runs in a daemon thread (a
    ThreadPoolExecutor's are joined at exit) the caller stops waiting for when time is up; at most
    MAX_LOOKUPS at once, so a resolver that never answers holds a fixed number of threads."""

    MAX_LOOKUPS = 8

    def __init__(self) -> None:
        self._slots = threading.BoundedSemaphore(self.MAX_LOOKUPS)

    def __call__(self, host: str, port: int, timeout_s: float) -> list | None:
        """getaddrinfo's answer, or None when it did not come within `timeout_s` (a slot included)."""
        end = time.monotonic() + timeout_s
        if not self._slots.acquire(timeout=max(timeout_s, 0)):
            return None
        done, box = threading.Event(), {}

        def lookup() -> None:
            try:
                box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except BaseException as exc:  # handed to the caller, raised there
                box["error"] = exc
            finally:
                self._slots.release()
                done.set()

        threading.Thread(target=lookup, name="imgclf-dns", daemon=True).start()
        if not done.wait(max(end - time.monotonic(), 0)):
            return None
        if "error" in box:
            raise box["error"]
        return box["infos"]


_lookup = _Resolver()


def _resolve(host: str, port: int, shown: str, timeout_s: float) -> tuple[IPAddress, ...]:
    """Resolve once, within `timeout_s` (numeric spellings such as 2130706433 or 0x7f.1 come back as is)."""
    try:
        infos = _lookup(host, port, timeout_s)
    except (socket.gaierror, UnicodeError):
        raise FetchRefused("dns", f"{shown}: the host does not resolve") from None
    if infos is None:
        raise FetchRefused("dns_timeout", f"{shown}: the host name did not resolve in time")
    found = dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos)  # no zone
    if not found:
        raise FetchRefused("dns", f"{shown}: the host does not resolve")
    return tuple(found)


def check_url(url: str, policy: FetchPolicy, timeout_s: float | None = None) -> CheckedURL:
    """Every check that needs no connection: scheme, credentials, allow-list, every resolved address
    (the lookup bounded by `timeout_s`, by default the policy's whole deadline)."""
    shown = redact(url)
    try:
        parts = urlsplit(url.strip())
        port = parts.port
        host = (parts.hostname or "").rstrip(".")
        host = host if ":" in host else host.encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        raise FetchRefused("bad_url", f"{shown}: not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in policy.schemes:
        raise FetchRefused("scheme", f"{shown}: only {'/'.join(policy.schemes)} URLs are fetched")
    if parts.username is not None or parts.password is not None:
        raise FetchRefused("credentials", f"{shown}: credentials in the URL are not sent; refusing it")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not host or not target.isascii() or any(c <= " " or c == "\x7f" for c in target):
        raise FetchRefused("bad_url", f"{shown}: no host, or spaces or control characters in the URL")
    if not _host_allowed(host, policy.allowed_hosts):
        raise FetchRefused("host_not_allowed", f"{shown}: host {host} is not on the allow-list")
    port = port or (443 if scheme == "https" else 80)
    addresses = _resolve(host, port, shown, policy.deadline_s if timeout_s is None else timeout_s)
    for ip in addresses:
        why = refusal(ip, policy.allow_private, policy.blocked_networks)
        if why:
            raise FetchRefused("not_global", f"{shown}: the host resolves to {why}")
    return CheckedURL(scheme, host, port, target, addresses)


class _Deadline:
    """The total deadline: a timer shuts the live socket down, so even a read that a slow-drip server
    keeps feeding byte by byte (never tripping the per-read timeout) ends."""

    def __init__(self, seconds: float, shown: str) -> None:
        self.end, self.shown, self.expired = time.monotonic() + seconds, shown, False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
        if self.expired:
            self._fire()

    def left(self) -> float:
        remaining = self.end - time.monotonic()
        if remaining <= 0 or self.expired:
            raise self.refused()
        return remaining

    def refused(self) -> FetchRefused:
        return FetchRefused("timeout", f"{self.shown}: the fetch ran past its deadline")

    def cancel(self) -> None:
        self._timer.cancel()


def _connect(checked: CheckedURL, policy: FetchPolicy, deadline: _Deadline) -> socket.socket:
    """A socket to the first checked address that answers (never a fresh DNS lookup)."""
    last: OSError | None = None
    for ip in checked.addresses:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        deadline.watch(sock)
        sock.settimeout(min(policy.connect_timeout_s, deadline.left()))
        try:
            sock.connect((str(ip), checked.port))
        except OSError as exc:
            sock.close()
            last = exc
            continue
        sock.settimeout(policy.read_timeout_s)
        return sock
    raise last or OSError("no address to connect to")


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to a checked address; `host` stays the name (Host header)."""

    def __init__(self, checked: CheckedURL, policy: FetchPolicy, deadline: _Deadline) -> None:
        super().__init__(checked.host, checked.port, timeout=policy.read_timeout_s)
        self._pin = (checked, policy, deadline)

    def connect(self) -> None:
        self.sock = _connect(*self._pin)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a checked address; SNI and the certificate check use the name."""

    def __init__(self, checked: CheckedURL, policy: FetchPolicy, deadline: _Deadline) -> None:
        context = ssl.create_default_context()
        super().__init__(checked.host, checked.port, timeout=policy.read_timeout_s, context=context)
        self._pin = (checked, policy, deadline)

    def connect(self) -> None:
        raw = _connect(*self._pin)
        wrapped = self._context.wrap_socket(raw, server_hostname=self.host, do_handshake_on_connect=False)
        self.sock = wrapped
        self._pin[2].watch(wrapped)  # the handshake, too, is under the deadline
        wrapped.do_handshake()


def _request(url: str, policy: FetchPolicy, deadline: _Deadline) -> tuple[http.client.HTTPConnection, Response, str]:
    """GET `url`, following redirects by hand (each hop checked again); the connection, its 200
    response and the URL that gave it."""
    for hop in range(policy.max_redirects + 1):
        checked = check_url(url, policy, deadline.left())
        conn = (_PinnedHTTPS if checked.scheme == "https" else _PinnedHTTP)(checked, policy, deadline)
        try:
            conn.request("GET", checked.target, headers={"User-Agent": "imgclf-fetch", "Accept": "*/*"})
            response = conn.getresponse()
            if response.status == 200:
                return conn, response, url
            location = response.getheader("Location")
            response.close()  # before the connection: a response to HTTP/1.0 owns the socket on its own
            conn.close()
        except BaseException:
            conn.close()
            raise
        if response.status not in REDIRECT_STATUSES:
            raise FetchRefused("http_status", f"{redact(url)}: the server answered HTTP {response.status}")
        if not location:
            raise FetchRefused("http_status", f"{redact(url)}: redirect without a Location")
        if policy.max_redirects == 0:
            raise FetchRefused("too_many_redirects", f"{redact(url)}: redirects are not followed")
        url = urljoin(url, location.strip())
        log.debug("fetch: redirect %d to %s", hop + 1, redact(url))
    raise FetchRefused("too_many_redirects", f"{redact(url)}: more than {policy.max_redirects} redirects")


def _stream(response: Response, shown: str, policy: FetchPolicy, deadline: _Deadline, sink: Sink) -> tuple[int, str]:
    """Body to `sink`, refused as soon as it passes the cap; (bytes, sha256)."""
    declared = response.getheader("Content-Length")
    declared_n = int(declared) if declared and declared.strip().isdigit() else None
    if declared_n is not None and declared_n > policy.max_bytes:
        raise FetchRefused("too_large", f"{shown}: declares {declared_n} bytes, over the cap of {policy.max_bytes}")
    digest, total = hashlib.sha256(), 0
    while True:
        deadline.left()
        chunk = response.read1(CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > policy.max_bytes:
            raise FetchRefused("too_large", f"{shown}: the body passes the cap of {policy.max_bytes} bytes")
        digest.update(chunk)
        sink(chunk)
    if deadline.expired:  # the watchdog's shutdown reads as an ordinary end of the body
        raise deadline.refused()
    if declared_n is not None and total != declared_n:
        raise FetchRefused("incomplete", f"{shown}: the body ended after {total} of {declared_n} bytes")
    sha = digest.hexdigest()
    if policy.sha256 and sha != policy.sha256.lower():
        raise FetchRefused("sha256_mismatch", f"{shown}: the content's sha256 is not the pinned one")
    return total, sha


def _fetch(url: str, policy: FetchPolicy, sink: Sink) -> FetchResult:
    shown = redact(url)
    deadline = _Deadline(policy.deadline_s, shown)
    conn = response = None
    try:
        conn, response, final = _request(url, policy, deadline)
        size, sha = _stream(response, redact(final), policy, deadline, sink)
        content_type = response.getheader("Content-Type") or ""
    except FetchRefused:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:  # never str(exc): it may quote the URL
        raise _failure(exc, shown, deadline) from None
    finally:
        deadline.cancel()
        for part in (response, conn):
            if part is not None:
                part.close()
    log.debug("fetch: %s -> %d bytes", shown, size)
    return FetchResult(shown, redact(final), content_type, size, sha)


def _failure(exc: BaseException, shown: str, deadline: _Deadline) -> FetchRefused:
    if deadline.expired:
        return deadline.refused()
    if isinstance(exc, TimeoutError):
        return FetchRefused("timeout", f"{shown}: the server did not answer in time")
    reason = "tls" if isinstance(exc, ssl.SSLError) else "connection"
    return FetchRefused(reason, f"{shown}: the fetch failed ({type(exc).__name__})")


def fetch_bytes(url: str, policy: FetchPolicy = FetchPolicy()) -> FetchResult:
    """The body of `url` in memory (for small things such as one image)."""
    body = bytearray()
    result = _fetch(url, policy, body.extend)
    return dataclasses.replace(result, data=bytes(body))


def fetch_to_file(url: str, dest: str | Path, policy: FetchPolicy = FetchPolicy()) -> FetchResult:
    """The body of `url` written to `dest` (through a temporary file beside it; nothing is left on failure)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            result = _fetch(url, policy, out.write)
        os.replace(partial, dest)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return dataclasses.replace(result, path=dest)
