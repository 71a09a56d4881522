"""The `imgclf` command: write the default data set, serve a model, summarise the last run."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def resolve_model(model: str) -> tuple[Path, str]:
    """A models:/ URI (downloaded from the MLflow registry) or a local bundle folder / .onnx file."""
    if model.startswith("models:/"):
        from imgclf.registry import fetch_bundle, resolve_version
        from imgclf.serving.deployment import deployments_dir

        name, version = resolve_version(model)
        return fetch_bundle(f"models:/{name}/{version}", deployments_dir() / f"{name}-v{version}")
    path = Path(model)
    if not path.exists():
        raise SystemExit(f"imgclf serve: {path} does not exist (give a bundle folder, an .onnx file or a models:/ URI)")
    return path, "local"


def _serve(args: argparse.Namespace) -> int:
    model_dir, version = resolve_model(args.model)
    from imgclf.serving.deployment import serve_command

    cmd, env = serve_command(model_dir, version, args.host, args.port)
    print(f"serving {args.model} (version {version}) from {model_dir} on http://{args.host}:{args.port}", flush=True)
    return subprocess.call(cmd, env=env)


def _digits(args: argparse.Namespace) -> int:
    from imgclf.datasets import write_digits

    count = write_digits(args.out, limit_per_class=args.limit_per_class or None)
    print(f"{count} digit images in {args.out}")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from imgclf.registry import latest_version

    import mlflow

    uri = mlflow.get_tracking_uri()
    version = latest_version(args.model_name)
    mv = mlflow.MlflowClient().get_model_version(args.model_name, version)
    print(f"\nRegistered models:/{args.model_name}/{version}  (MLflow run {mv.run_id})")
    for key in ("test_accuracy", "test_macro_f1"):
        if key in mv.tags:
            print(f"  {key} = {mv.tags[key]}")
    print(f"MLflow UI:      mlflow ui --backend-store-uri {uri}")
    print("ZenML dashboard: zenml login --local   (runs, artifacts and visualisations)")
    print(f"Serve it:       make serve   (or: imgclf serve --model models:/{args.model_name}/{version})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imgclf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve a model over HTTP with BentoML")
    p.add_argument("--model", default="models:/image-classifier/latest", help="bundle folder, .onnx file or models:/NAME/VERSION|latest or models:/NAME@ALIAS")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=_serve)

    p = sub.add_parser("digits", help="write scikit-learn's digits as PNGs, a folder per class")
    p.add_argument("out", nargs="?", default="data/digits")
    p.add_argument("--limit-per-class", type=int, default=0, help="0 = all images")
    p.set_defaults(func=_digits)

    p = sub.add_parser("summary", help="print the latest registered model and where to look")
    p.add_argument("--model-name", default="image-classifier")
    p.set_defaults(func=_summary)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
