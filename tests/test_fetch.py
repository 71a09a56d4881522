"""The guarded fetcher: SSRF spellings refused before anything is contacted, redirects checked hop by
hop, byte cap, total deadline, sha256 pin, redacted messages, and the data-source download through it.

Only a local http.server on 127.0.0.1 is ever contacted (started and stopped here)."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import socket
import ssl
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError

from imgclf.data import fetch as fetch_module
from imgclf.data.archive import ArchiveError, ArchiveLimits, download
from imgclf.data.fetch import FetchPolicy, FetchRefused, check_url, fetch_bytes, fetch_to_file, loggable, redact
from imgclf.data.sources import SourceConfig, load_source

SECRET = "tok3n-SECRET"
LOCAL = FetchPolicy(allow_private=True, allowed_hosts=["127.0.0.1"])
PAYLOAD = bytes(range(256)) * 40  # 10 KiB


@pytest.fixture()
def no_contact(monkeypatch):
    """Any attempt to open a connection fails the test: a refusal must come before contact."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a connection was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# -- checks that need no server ---------------------------------------------------------------

REFUSED_BY_DEFAULT = [
    "http://127.0.0.1/",
    "http://2130706433/",  # decimal
    "http://0177.0.0.1/",  # octal
    "http://0x7f.1/",  # hex, short form
    "http://127.1/",
    "http://localhost/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo
    "http://169.254.169.254/latest/meta-data/",
    "http://0xa9fea9fe/",  # 169.254.169.254 in hex
    "http://[fe80::1]/",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # CGNAT
    "http://[fc00::1]/",  # ULA
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://240.0.0.1/",  # reserved
    "http://[::127.0.0.1]/",  # IPv4-compatible (deprecated, reserved)
]


@pytest.mark.parametrize("url", REFUSED_BY_DEFAULT)
def test_non_global_spellings_are_refused_without_contact(no_contact, url):
    with pytest.raises(FetchRefused) as caught:
        fetch_bytes(url)
    assert caught.value.reason == "not_global", caught.value


@pytest.mark.parametrize("host", ["2130706433", "0177.0.0.1", "0x7f.1", "127.1", "0x7f000001"])
def test_numeric_spellings_are_judged_as_the_address_they_mean(no_contact, host):
    checked = check_url(f"http://{host}:8080/a?b=c", FetchPolicy(allow_private=True))
    assert checked.addresses == (ipaddress.ip_address("127.0.0.1"),)
    assert (checked.host, checked.port, checked.target) == (host, 8080, "/a?b=c")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/",  # AWS IPv6 metadata, inside the ULA range
        "http://0.0.0.0/",
        "http://0.1.2.3/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
    ],
)
def test_metadata_link_local_and_multicast_stay_refused_with_allow_private(no_contact, url):
    with pytest.raises(FetchRefused) as caught:
        check_url(url, FetchPolicy(allow_private=True))
    assert caught.value.reason == "not_global"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/", "http://[::1]/", "http://10.1.2.3/", "http://100.64.0.1/", "http://[fc00::1]/"]
)
def test_allow_private_opens_private_networks_only_when_set(no_contact, url):
    assert check_url(url, FetchPolicy(allow_private=True)).addresses
    with pytest.raises(FetchRefused):
        check_url(url, FetchPolicy())


@pytest.mark.parametrize("url", ["http://8.8.8.8/x.zip", "https://[2606:4700:4700::1111]/", "http://[::ffff:8.8.8.8]/"])
def test_global_addresses_pass_the_checks(no_contact, url):
    assert check_url(url, FetchPolicy()).addresses


@pytest.mark.parametrize(
    "url, policy, reason",
    [
        ("file:///etc/passwd", FetchPolicy(), "scheme"),
        ("ftp://8.8.8.8/x.zip", FetchPolicy(), "scheme"),
        ("gopher://8.8.8.8/", FetchPolicy(), "scheme"),
        ("http://8.8.8.8/", FetchPolicy(schemes=["https"]), "scheme"),
        (f"http://user:{SECRET}@8.8.8.8/", FetchPolicy(), "credentials"),
        ("http://8.8.8.8/", FetchPolicy(allowed_hosts=["data.example"]), "host_not_allowed"),
        ("http://127.0.0.1/", FetchPolicy(allow_private=True, allowed_hosts=["localhost"]), "host_not_allowed"),
        ("http://8.8.8.8:99999/", FetchPolicy(), "bad_url"),
        ("http:///nohost", FetchPolicy(), "bad_url"),
        ("http://8.8.8.8/a b.zip", FetchPolicy(), "bad_url"),
        ("http://8.8.8.8/caf\u00e9.zip", FetchPolicy(), "bad_url"),
    ],
)
def test_scheme_credentials_allow_list_and_bad_urls(no_contact, url, policy, reason):
    with pytest.raises(FetchRefused) as caught:
        fetch_bytes(url, policy)
    assert caught.value.reason == reason and SECRET not in str(caught.value)


def test_allow_list_matches_names_and_domains(no_contact):
    assert (
        check_url("http://LocalHost./x", FetchPolicy(allow_private=True, allowed_hosts=["localhost"])).host
        == "localhost"
    )
    assert check_url("http://localhost/", FetchPolicy(allow_private=True, allowed_hosts=[".localhost"]))
    assert check_url("http://[::1]/", FetchPolicy(allow_private=True, allowed_hosts=["[::1]"]))
    with pytest.raises(FetchRefused, match="allow-list"):
        check_url("http://127.0.0.1/", FetchPolicy(allow_private=True, allowed_hosts=[".0.0.1"]))


@pytest.fixture()
def hung_resolver(monkeypatch):
    """getaddrinfo that does not answer until the test ends (then its threads are let go and joined)."""
    release, calls = threading.Event(), []

    def hang(host, *args, **kwargs):
        calls.append(host)
        release.wait(timeout=60)
        raise socket.gaierror("released")

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    yield calls
    release.set()
    for thread in threading.enumerate():
        if thread.name == "imgclf-dns":
            thread.join(timeout=10)


def test_a_slow_resolver_is_refused_at_the_deadline(no_contact, hung_resolver):
    started = time.monotonic()
    with pytest.raises(FetchRefused) as caught:
        fetch_bytes("http://slow.example/x.png", FetchPolicy(deadline_s=0.3))
    assert caught.value.reason == "dns_timeout" and hung_resolver == ["slow.example"]
    assert time.monotonic() - started < 30, "the fetch waited for the resolver, not its deadline"


def test_hung_lookups_hold_a_bounded_number_of_threads(no_contact, hung_resolver):
    """Once every lookup slot is held by a resolver that never answers, later lookups are refused at
    their deadline without starting a thread of their own."""
    bound = fetch_module._Resolver.MAX_LOOKUPS
    for n in range(bound + 3):
        with pytest.raises(FetchRefused) as caught:
            check_url(f"http://host{n}.example/", FetchPolicy(), timeout_s=0.05)
        assert caught.value.reason == "dns_timeout"
    assert len(hung_resolver) == bound
    assert sum(t.name == "imgclf-dns" for t in threading.enumerate()) == bound


def test_a_name_that_does_not_resolve_is_refused(no_contact, monkeypatch):
    def unknown(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    with pytest.raises(FetchRefused) as caught:
        fetch_bytes("http://nowhere.example/x.png")
    assert caught.value.reason == "dns"


def test_redact_keeps_scheme_host_port_path_only():
    url = f"HTTPS://me:{SECRET}@Data.Example:8443/sets/a.zip?token={SECRET}#frag"
    assert redact(url) == "https://data.example:8443/sets/a.zip"
    assert redact(f"http://[::1]/x?{SECRET}") == "http://[::1]/x"
    assert redact("http://h:notaport/") == "<unparsable URL>"
    assert loggable(f"https://h/a.zip?sig={SECRET}") == "https://h/a.zip"
    assert loggable("data/digits") == "data/digits"


def test_policy_is_strict():
    with pytest.raises(ValidationError):
        FetchPolicy(allow_privat=True)
    with pytest.raises(ValidationError):
        FetchPolicy(sha256="abc")
    with pytest.raises(ValidationError):
        FetchPolicy(schemes=["file"])


@pytest.mark.parametrize("url", ["http://8.8.8.8/evil#.zip", "http://8.8.8.8/evil?x=.zip", "http://8.8.8.8/"])
def test_download_suffix_check_uses_the_path(no_contact, tmp_path, url):
    with pytest.raises(ArchiveError, match="does not name"):
        download(url, tmp_path)
    assert not any(tmp_path.iterdir())


# -- against a local server -------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.server.last_host = self.headers.get("Host")
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        route = getattr(self, "route_" + parts.path.strip("/").replace("-", "_").replace(".", "_"), None)
        try:
            if route is None:
                self.send_error(404)
            else:
                route(query)
        except OSError:  # the client went away (the point of several tests)
            pass

    def _send(self, body: bytes, length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def route_ok(self, query) -> None:
        self._send(PAYLOAD)

    def route_data_zip(self, query) -> None:
        self._send(self.server.files["data.zip"])

    def route_redirect(self, query) -> None:
        self.send_response(302)
        self.send_header("Location", query["to"])
        self.end_headers()

    def route_loop(self, query) -> None:
        self.route_redirect({"to": "/loop"})

    def route_declared(self, query) -> None:
        self._send(b"x" * 100, length=10 * 1024**3)

    def route_short(self, query) -> None:
        self._send(b"x" * 10, length=100)

    def route_undeclared(self, query) -> None:
        self.send_response(200)
        self.end_headers()  # HTTP/1.0 without a length: the body ends when the connection closes
        for _ in range(64):
            self.wfile.write(b"x" * 1024)

    def route_chunked(self, query) -> None:
        self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(64):
            self.wfile.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def route_drip(self, query) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        self._drip(b"x" * 100)

    def route_drip_headers(self, query) -> None:
        self._drip(b"HTTP/1.0 200 OK\r\nX-Slow: " + b"a" * 100)

    def _drip(self, data: bytes) -> None:
        """One byte every 50 ms: never silent long enough for a read timeout. Records whether the client
        hung up before the drip ended (what the deadline must make it do)."""
        try:
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            self.server.hung_up.set()


class _Server:
    httpd: ThreadingHTTPServer


@pytest.fixture(scope="module")
def server(tmp_path_factory, digits_dir):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    zipped = tmp_path_factory.mktemp("served") / "data.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for path in sorted(digits_dir.rglob("*")):
            zf.write(path, Path("digits") / path.relative_to(digits_dir))
    httpd.files = {"data.zip": zipped.read_bytes()}
    httpd.hung_up = threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Server.httpd = httpd
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _refused(url: str, policy: FetchPolicy) -> FetchRefused:
    with pytest.raises(FetchRefused) as caught:
        fetch_bytes(url, policy)
    return caught.value


@pytest.mark.service
def test_fetch_follows_a_checked_redirect(server):
    result = fetch_bytes(f"{server}/redirect?to=/ok", LOCAL)
    assert result.data == PAYLOAD and result.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert result.final_url == f"{server}/ok" and result.url == f"{server}/redirect"


@pytest.mark.service
@pytest.mark.parametrize(
    "target, reason",
    [
        (f"http://169.254.169.254/latest/meta-data/?token={SECRET}", "not_global"),
        ("http://0xa9fea9fe/", "not_global"),
        ("http://[::ffff:169.254.169.254]/", "not_global"),
        ("http://localhost:1/ok", "host_not_allowed"),  # loopback by another name: not on the allow-list
        ("file:///etc/passwd", "scheme"),
    ],
)
def test_each_redirect_hop_is_checked(server, target, reason):
    """The first hop reaches the local server (private allowed); the metadata address stays blocked."""
    policy = FetchPolicy(allow_private=True, allowed_hosts=None if reason == "not_global" else ["127.0.0.1"])
    refused = _refused(f"{server}/redirect?to={target}", policy)
    assert refused.reason == reason and SECRET not in str(refused)


@pytest.mark.service
def test_redirects_off_and_redirect_loops(server):
    assert _refused(f"{server}/redirect?to=/ok", LOCAL.model_copy(update={"max_redirects": 0})).reason == (
        "too_many_redirects"
    )
    assert _refused(f"{server}/loop", LOCAL).reason == "too_many_redirects"


@pytest.mark.service
@pytest.mark.parametrize("path", ["/declared", "/undeclared", "/chunked"])
def test_byte_cap_declared_and_undeclared(server, path):
    refused = _refused(f"{server}{path}", LOCAL.model_copy(update={"max_bytes": 16 * 1024}))
    assert refused.reason == "too_large"


@pytest.mark.service
def test_a_body_shorter_than_declared_is_refused(server):
    assert _refused(f"{server}/short", LOCAL).reason == "incomplete"


@pytest.mark.service
@pytest.mark.parametrize("path", ["/drip", "/drip-headers"])
def test_slow_drip_runs_into_the_total_deadline(server, path):
    """Each read is quick (no read timeout trips), so only the deadline ends it: the client hangs up
    while the server is still dripping (5 s of drip; the deadline is 0.5 s)."""
    _Server.httpd.hung_up.clear()
    policy = LOCAL.model_copy(update={"deadline_s": 0.5, "read_timeout_s": 30})
    assert _refused(f"{server}{path}", policy).reason == "timeout"
    assert _Server.httpd.hung_up.wait(timeout=10), "the fetch waited for the whole drip"


@pytest.mark.service
def test_query_tokens_never_reach_messages_or_logs(server, caplog):
    caplog.set_level(logging.DEBUG, logger="imgclf.data.fetch")
    refused = _refused(f"{server}/missing?token={SECRET}", LOCAL)
    assert refused.reason == "http_status" and "404" in str(refused) and SECRET not in str(refused)
    fetch_bytes(f"{server}/redirect?to=/ok%3Ftoken%3D{SECRET}&token={SECRET}", LOCAL)
    assert caplog.records and SECRET not in caplog.text


@pytest.mark.service
def test_fetch_to_file_pin_and_nothing_left_on_failure(server, tmp_path):
    dest = tmp_path / "out" / "ok.bin"
    wrong = LOCAL.model_copy(update={"sha256": "0" * 64})
    with pytest.raises(FetchRefused) as caught:
        fetch_to_file(f"{server}/ok", dest, wrong)
    assert caught.value.reason == "sha256_mismatch" and not any(dest.parent.iterdir())
    right = LOCAL.model_copy(update={"sha256": hashlib.sha256(PAYLOAD).hexdigest()})
    assert fetch_to_file(f"{server}/ok", dest, right).path == dest and dest.read_bytes() == PAYLOAD
    assert [p.name for p in dest.parent.iterdir()] == ["ok.bin"]


@pytest.mark.service
def test_download_refusals_leave_no_part_file(server, tmp_path):
    with pytest.raises(ArchiveError, match="too_large"):
        download(f"{server}/data.zip", tmp_path, ArchiveLimits(max_download_bytes=1024), LOCAL)
    with pytest.raises(ArchiveError, match="sha256_mismatch"):
        download(f"{server}/data.zip", tmp_path, policy=LOCAL.model_copy(update={"sha256": "1" * 64}))
    assert not list(tmp_path.rglob("*"))


@pytest.mark.service
def test_url_source_is_downloaded_through_the_fetcher(server, tmp_path):
    url = f"{server}/data.zip?token={SECRET}"
    with pytest.raises(ArchiveError, match="not_global") as caught:  # private networks are opt-in
        load_source(url, SourceConfig(work_dir=str(tmp_path)))
    assert SECRET not in str(caught.value)
    pin = fetch_bytes(url, LOCAL.model_copy(update={"max_bytes": 10 * 1024**2})).sha256
    config = SourceConfig(
        work_dir=str(tmp_path), download_allow_private=True, download_allowed_hosts=["127.0.0.1"], download_sha256=pin
    )
    assert len(load_source(url, config)) == 300


@pytest.fixture()
def tls_server(tmp_path, monkeypatch):
    """An HTTPS server on 127.0.0.1 whose certificate names only `localhost`, trusted by the client."""
    cert, key = _self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.socket = server_context.wrap_socket(httpd.socket, server_side=True)
    real = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: real(cafile=str(cert)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.mark.service
def test_https_checks_the_certificate_against_the_url_name(tls_server):
    """The socket goes to the checked IP, but SNI and the certificate check use the name in the URL:
    the same server by its name passes, by its IP (not in the certificate) is refused."""
    policy = FetchPolicy(allow_private=True)
    assert fetch_bytes(f"https://localhost:{tls_server}/ok", policy).data == PAYLOAD
    assert _refused(f"https://127.0.0.1:{tls_server}/ok", policy).reason == "tls"


@pytest.mark.service
def test_the_name_is_resolved_once_and_the_checked_address_is_dialled(server, monkeypatch):
    """DNS rebinding: a second lookup would answer the metadata address; there must be none, and the
    connection goes to the address that was checked, with the name in the Host header."""
    port = int(server.rsplit(":", 1)[1])
    answers = iter(["127.0.0.1", "169.254.169.254"])
    lookups, dialled = [], []
    real_connect = socket.socket.connect

    def rebinding(host, *args, **kwargs):
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    def connect(sock, address):
        dialled.append(address)
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(socket.socket, "connect", connect)
    policy = FetchPolicy(allow_private=True, allowed_hosts=["data.test"])
    assert fetch_bytes(f"http://data.test:{port}/ok", policy).data == PAYLOAD
    assert lookups == ["data.test"] and dialled == [("127.0.0.1", port)]
    assert _Server.httpd.last_host == f"data.test:{port}"
