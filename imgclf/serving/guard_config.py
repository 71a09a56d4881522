"""What the request guard enforces and the decode caps the service applies, from IMGCLF_* environment
variables (so `imgclf serve`, the deploy step and a container set them the same way), and the rule that
a service reachable from other machines must have API keys."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from imgclf.data.decode import SERVING_LIMITS, DecodeLimits
from imgclf.data.validation_config import ValidationConfig
from imgclf.serving.predictor import MAX_UPLOAD_BYTES

ENV_PREFIX = "IMGCLF_"
BIND_HOST_ENV = f"{ENV_PREFIX}BIND_HOST"  # set by deployment.serve_command from --host
PROBE_PATHS = ("/healthz", "/readyz", "/livez", "/metrics")
PAGE_PATH = "/"  # the web page holds no data; its requests to the API carry the key
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
MIN_KEY_CHARS = 16
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class GuardConfigError(ValueError):
    """The guard's settings cannot be used (or would expose the service without keys); says which."""


class FormRule(BaseModel):
    """The multipart/form-data a route takes: which parts must be files, which are short text values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    files: tuple[str, ...]
    texts: tuple[str, ...] = ()
    required: tuple[str, ...] = ()


class JsonRule(BaseModel):
    """A route that takes a small JSON object (application/json), e.g. {"url": ...}."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_bytes: int = Field(8192, gt=0)


# POST routes that take a body, and what each takes; a request with a body to any other path is a 415.
ROUTES: dict[str, FormRule | JsonRule] = {
    "/predict": FormRule(files=("image",), texts=("top_k",), required=("image",)),
    "/predict/url": JsonRule(),
}


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (also IPv4-mapped) or the name localhost; 0.0.0.0 and :: are every interface."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


class GuardConfig(BaseModel):
    """Limits, keys and names. Each field reads IMGCLF_<FIELD> (lists comma-separated) in `from_env`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(MAX_UPLOAD_BYTES + 256 * 1024, gt=0, description="whole request body")
    max_parts: int = Field(64, ge=1, description="parts in one multipart body")
    max_field_bytes: int = Field(1024, ge=1, description="one text field's value")
    max_filename_bytes: int = Field(200, ge=1, le=240, description="UTF-8 bytes; BentoML puts it in a file name")
    max_part_header_bytes: int = Field(4096, ge=256, description="one part's headers together")
    body_timeout_s: float = Field(20, gt=0, description="to receive the whole body (BentoML's timeout is 30 s)")
    max_concurrency: int = Field(64, ge=1, description="requests in flight per worker; more get a 429")
    retry_after_s: int = Field(1, ge=0)
    api_keys: tuple[SecretStr, ...] = Field((), description="plain keys, hashed at start")
    api_keys_file: Path | None = Field(None, description="one sha256 hex digest of a key per line; # comments")
    bind_host: str = Field("127.0.0.1", description="the address the server listens on")
    allowed_hosts: tuple[str, ...] = Field((), description="Host header names besides loopback and bind_host")
    open_paths: tuple[str, ...] = Field(PROBE_PATHS, description="no key, no Host check, no concurrency limit")
    routes: dict[str, FormRule | JsonRule] = Field(default_factory=lambda: dict(ROUTES))

    _key_hashes: tuple[bytes, ...] = PrivateAttr(())

    @field_validator("api_keys")
    @classmethod
    def _long_enough(cls, keys: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for number, key in enumerate(keys, 1):
            if len(key.get_secret_value()) < MIN_KEY_CHARS:
                raise ValueError(f"API key {number} is shorter than {MIN_KEY_CHARS} characters")
        return keys

    def model_post_init(self, context: object) -> None:
        hashes = [hashlib.sha256(key.get_secret_value().encode()).digest() for key in self.api_keys]
        if self.api_keys_file is not None:
            hashes += _read_key_file(self.api_keys_file)
        self._key_hashes = tuple(hashes)

    @property
    def key_hashes(self) -> tuple[bytes, ...]:
        return self._key_hashes

    @property
    def keys_required(self) -> bool:
        return bool(self._key_hashes) or not is_loopback(self.bind_host)

    @property
    def host_names(self) -> frozenset[str]:
        names = {*LOOPBACK_NAMES, *(h.lower().strip("[]").rstrip(".") for h in self.allowed_hosts)}
        if self.bind_host not in ("0.0.0.0", "::"):
            names.add(self.bind_host.lower().strip("[]"))
        return frozenset(names)

    def check_bind(self) -> None:
        """Refuse to serve on a non-loopback address without keys: anyone who can reach it could use it."""
        if not is_loopback(self.bind_host) and not self._key_hashes:
            raise GuardConfigError(
                f"refusing to serve on {self.bind_host} (reachable from other machines) without API keys: "
                f"set {ENV_PREFIX}API_KEYS (comma-separated keys) or {ENV_PREFIX}API_KEYS_FILE (sha256 hex "
                "digests, one per line), or listen on 127.0.0.1"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> GuardConfig:
        """IMGCLF_MAX_BODY_BYTES=..., IMGCLF_API_KEYS=a,b, ...; `overrides` win. Errors name the variable."""
        return _from_env(cls, "request guard settings", environ, skip=("routes",), **overrides)


# Training's caps (ValidationConfig's defaults). The service may be stricter or looser than SERVING_LIMITS
# but never looser than these: no model was trained or evaluated on images outside them.
TRAINING_CAPS = ValidationConfig()


class DecodeSettings(BaseModel):
    """The service's decode caps (DecodeLimits); each field reads IMGCLF_<FIELD>."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_pixels: int = Field(SERVING_LIMITS.max_pixels, ge=1, description="width*height")
    max_side: int = Field(SERVING_LIMITS.max_side, ge=1, description="longest side, px")
    min_side: int = Field(SERVING_LIMITS.min_side, ge=1, description="shortest side, px")
    max_aspect: float = Field(SERVING_LIMITS.max_aspect, ge=1, description="long side / short side; inf: no cap")

    @field_validator("max_pixels", "max_side")
    @classmethod
    def _not_above_training(cls, value: int, info: ValidationInfo) -> int:
        cap = {"max_pixels": TRAINING_CAPS.max_pixels, "max_side": TRAINING_CAPS.max_size}[str(info.field_name)]
        if value > cap:
            raise ValueError(f"{value} is above training's cap of {cap}")
        return value

    @field_validator("min_side")
    @classmethod
    def _not_below_training(cls, value: int) -> int:
        if value < TRAINING_CAPS.min_size:
            raise ValueError(f"{value} is below training's minimum side of {TRAINING_CAPS.min_size} px")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DecodeSettings:
        if self.max_side < self.min_side:
            raise ValueError(f"{ENV_PREFIX}MAX_SIDE ({self.max_side}) is below {ENV_PREFIX}MIN_SIDE ({self.min_side})")
        if self.min_side**2 > self.max_pixels:
            raise ValueError(
                f"{ENV_PREFIX}MIN_SIDE ({self.min_side}) squared is above {ENV_PREFIX}MAX_PIXELS ({self.max_pixels}):"
                " no image would pass"
            )
        return self

    def limits(self) -> DecodeLimits:
        return DecodeLimits(self.max_pixels, self.max_side, self.min_side, self.max_aspect)


def decode_limits_from_env(environ: Mapping[str, str] | None = None) -> DecodeLimits:
    """SERVING_LIMITS with IMGCLF_MAX_PIXELS, _MAX_SIDE, _MIN_SIDE, _MAX_ASPECT applied; read it once at
    start. Raises GuardConfigError naming the variable for a value that is not a number, or is looser
    than training's caps."""
    return _from_env(DecodeSettings, "serving decode limits", environ).limits()


Settings = TypeVar("Settings", bound=BaseModel)


def _from_env(
    cls: type[Settings], what: str, environ: Mapping[str, str] | None, skip: tuple[str, ...] = (), **overrides: object
) -> Settings:
    """`cls` from IMGCLF_<FIELD> variables (tuple fields comma-separated); a GuardConfigError naming them."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name, field in cls.model_fields.items():
        raw = environ.get(f"{ENV_PREFIX}{name.upper()}")
        if raw is None or name in skip:
            continue
        is_list = get_origin(field.annotation) is tuple
        values[name] = tuple(v.strip() for v in raw.split(",") if v.strip()) if is_list else raw.strip()
    values.update(overrides)
    try:
        return cls(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{str(e['loc'][0]).upper()}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors(include_input=False)
        )
        raise GuardConfigError(f"{what}: {problems}") from None


def _read_key_file(path: Path) -> list[bytes]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read the API key file {path}: {exc.strerror}") from None
    hashes = []
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip().lower()
        if not line:
            continue
        if not _SHA256_HEX.fullmatch(line):
            raise ValueError(f"line {number} of {path} is not a sha256 hex digest (64 hex characters)")
        hashes.append(bytes.fromhex(line))
    if not hashes:
        raise ValueError(f"the API key file {path} holds no key digests")
    return hashes


def check_service_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> None:
    """Every IMGCLF_* setting a service reads at start (guard, decode caps, batching) is usable, and a
    non-loopback bind has API keys; GuardConfigError naming the variable otherwise. Run before a server
    starts (`imgclf serve`, the deploy step, the container's preflight), so a bad value is one clear
    message instead of a worker that dies while loading."""
    from imgclf.serving.batching import BatchConfig

    GuardConfig.from_env(environ, **overrides).check_bind()
    decode_limits_from_env(environ)
    try:
        BatchConfig.from_env(environ)
    except ValueError as exc:
        raise GuardConfigError(str(exc)) from None


if __name__ == "__main__":  # the container's preflight: refuse to start with settings it would refuse
    import sys

    try:
        check_service_settings()
    except GuardConfigError as exc:
        sys.exit(f"imgclf: {exc}")
