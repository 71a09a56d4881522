"""The input of image-URL inference (`POST /predict/url`): the URL fetched through the guarded fetcher
(imgclf.data.fetch: global addresses only, the checked address dialled, redirects re-checked, byte cap,
deadline) with the service's policy, and a refusal turned into the client error to answer with.

The policy comes from the environment, like the request guard's settings: IMGCLF_URL_ALLOWED_HOSTS
(comma-separated names; a leading dot admits subdomains), IMGCLF_URL_ALLOW_PRIVATE (loopback and private
networks, for tests and closed networks only), IMGCLF_URL_DEADLINE_S and IMGCLF_URL_MAX_REDIRECTS."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from imgclf.data.fetch import FetchPolicy, FetchRefused, fetch_bytes
from imgclf.serving.predictor import MAX_UPLOAD_BYTES

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class UrlRejected(Exception):
    """What the client is told: a 4xx status and a reason (the URL in it redacted, no query string)."""

    status: int
    message: str
    reason: str  # the fetcher's refusal code, or "bad_request"


def url_policy(environ: Mapping[str, str] | None = None) -> FetchPolicy:
    env = os.environ if environ is None else environ
    hosts = [h.strip() for h in env.get("IMGCLF_URL_ALLOWED_HOSTS", "").split(",") if h.strip()]
    return FetchPolicy(
        allow_private=env.get("IMGCLF_URL_ALLOW_PRIVATE", "").strip().lower() in _TRUE,
        allowed_hosts=hosts or None,
        deadline_s=float(env.get("IMGCLF_URL_DEADLINE_S", 10)),
        read_timeout_s=5.0,
        max_redirects=int(env.get("IMGCLF_URL_MAX_REDIRECTS", 3)),
        max_bytes=MAX_UPLOAD_BYTES,
    )


def fetch_image_bytes(url: object, policy: FetchPolicy) -> bytes:
    """The bytes at `url`; UrlRejected (413 over the upload cap, else 400) when it cannot be fetched here."""
    if not isinstance(url, str) or not url.strip():
        raise UrlRejected(400, 'send {"url": "https://..."}: the image URL as a string', "bad_request")
    try:
        return fetch_bytes(url.strip(), policy).data or b""
    except FetchRefused as exc:
        status = 413 if exc.reason == "too_large" else 400
        raise UrlRejected(status, f"the image URL was not fetched: {exc.detail} ({exc.reason})", exc.reason) from None
