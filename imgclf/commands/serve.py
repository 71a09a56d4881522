"""`imgclf serve`: a registered version, a bundle or an ONNX file behind the BentoML service."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from imgclf import paths


def resolve_model(model: str) -> tuple[Path, str]:
    """A models:/ URI (downloaded from the MLflow registry) or a local bundle folder / .onnx file."""
    if model.startswith("models:/"):
        from imgclf.registry import fetch_bundle, resolve_version

        name, version = resolve_version(model)
        return fetch_bundle(f"models:/{name}/{version}", paths.deployments_dir() / f"{name}-v{version}")
    path = Path(model)
    if not path.exists():
        raise SystemExit(f"imgclf serve: {path} does not exist (give a bundle folder, an .onnx file or a models:/ URI)")
    return path, "local"


def default_model(name: str) -> tuple[str, str]:
    """(models:/ URI, why): production when a version holds it, else staging, else the latest version."""
    from imgclf.registry import STAGES, alias_version, latest_version

    for stage in reversed(STAGES):
        version = alias_version(name, stage)
        if version is not None:
            return f"models:/{name}@{stage}", f"{stage} is version {version}"
    return f"models:/{name}/latest", f"no version holds staging or production; the latest is {latest_version(name)}"


def serve(args: argparse.Namespace) -> int:
    from imgclf.serving.guard_config import GuardConfigError, check_service_settings

    try:  # before any download: a non-loopback --host needs API keys; IMGCLF_* values must be usable
        check_service_settings(bind_host=args.host)
    except GuardConfigError as exc:
        raise SystemExit(f"imgclf serve: {exc}") from None
    if args.model is None:
        args.model, why = default_model(args.model_name)
        print(f"serving {args.model}: {why}", flush=True)
    model_dir, version = resolve_model(args.model)
    check_servable(model_dir)
    from imgclf.serving.deployment import serve_command

    cmd, env = serve_command(model_dir, version, args.host, args.port)
    print(f"serving {args.model} (version {version}) from {model_dir} on http://{args.host}:{args.port}", flush=True)
    return subprocess.call(cmd, env=env)


def check_servable(model: Path) -> None:
    """The service runs an ONNX file; without one BentoML's worker would fail and restart over and over."""
    from imgclf.bundle import serving_model

    if model.is_file() and model.suffix != ".onnx":
        raise SystemExit(
            f"imgclf serve: {model} is not an .onnx file (give a bundle folder, an .onnx file or a models:/ URI)"
        )
    onnx = model / serving_model(model) if model.is_dir() else model
    if not onnx.is_file():
        raise SystemExit(
            f"imgclf serve: {model} holds no {onnx.name} to serve: the service runs ONNX, and a bundle from "
            f"`imgclf train` holds torch weights only. Export it first: imgclf export {model} --out {model}"
        )
