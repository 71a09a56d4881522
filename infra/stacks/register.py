"""Register the Kubernetes and Kubeflow stacks with ZenML's own flavors. Idempotent: a component that
exists is updated to the configuration asked for, a stack that exists gets these components.

Both stacks share the remote pieces and differ only in the orchestrator:

- artifact store  `s3` flavor against an S3 API (MinIO by default: `client_kwargs.endpoint_url`)
- container registry `default` flavor (any registry the cluster can pull from)
- image builder `local` (the Docker daemon of the machine that starts the run) or `kaniko` (in the cluster)
- MLflow experiment tracker and model registry on a remote MLflow server (authenticated)
- orchestrator `kubernetes` (stack imgclf-k8s) or `kubeflow` (stack imgclf-kubeflow)

Credentials never sit in a component's configuration: they go into ZenML secrets (`imgclf_s3`,
`imgclf_mlflow`, `imgclf_kubeflow`) that the components reference as `{{secret.key}}`. A secret is
created from the environment (names below) and kept as it is when those variables are unset, so a
second run needs no credentials. Every other parameter is an option, an environment variable or the
default printed by `--help`. Nothing here talks to the cluster: ZenML checks the configuration against
each flavor's config class; the cluster, registry, bucket and MLflow server are reached at run time.

Run from the repository root with infra/env.sh sourced (the ZenML store it selects is where the stacks go):
    python infra/stacks/register.py kubernetes kubeflow [--activate STACK] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

STACKS = {"kubernetes": "imgclf-k8s", "kubeflow": "imgclf-kubeflow"}
MLFLOW_EXPERIMENT = "imgclf"
ENV_PREFIX = "IMGCLF_STACK_"


class RemoteStackConfig(BaseModel):
    """Where the remote pieces are. Each field's environment variable is IMGCLF_STACK_ + its name in capitals."""

    model_config = ConfigDict(extra="forbid")

    namespace: str = Field("imgclf", description="Kubernetes namespace the pipeline pods (and kaniko) run in")
    kubernetes_context: str = Field("", description="kubeconfig context; empty: in-cluster (the run starts in a pod)")
    artifact_path: str = Field("s3://imgclf-artifacts", pattern=r"^s3://", description="bucket (and prefix)")
    s3_endpoint: str = Field("http://minio.imgclf.svc.cluster.local:9000", description="S3 API URL; '' for AWS S3")
    registry_uri: str = Field("localhost:5001/imgclf", description="container registry the cluster pulls from")
    image_builder: Literal["local", "kaniko"] = Field("local", description="local Docker daemon or kaniko pods")
    mlflow_uri: str = Field("http://mlflow.imgclf.svc.cluster.local:5000", pattern=r"^https?://")
    kubeflow_host: str = Field("", description="Kubeflow Pipelines URL; empty: port-forward through the context")
    kubeflow_user_namespace: str = Field("", description="multi-user Kubeflow profile namespace")


def config_from(args: dict[str, Any], environ: dict[str, str]) -> RemoteStackConfig:
    """Options win over IMGCLF_STACK_* environment variables, which win over the defaults."""
    variables = {name: ENV_PREFIX + name.upper() for name in RemoteStackConfig.model_fields}
    values = {name: environ[variable] for name, variable in variables.items() if variable in environ}
    return RemoteStackConfig(**{**values, **{k: v for k, v in args.items() if v is not None}})


@dataclass(frozen=True)
class SecretSpec:
    """A ZenML secret: key in the secret -> environment variable it is read from."""

    name: str
    keys: dict[str, str]
    optional: bool = False  # registered only when its variables are set

    def reference(self, key: str) -> str:
        return f"{{{{{self.name}.{key}}}}}"


S3_SECRET = SecretSpec(
    "imgclf_s3", {"aws_access_key_id": "AWS_ACCESS_KEY_ID", "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY"}
)
MLFLOW_SECRET = SecretSpec(
    "imgclf_mlflow", {"username": "MLFLOW_TRACKING_USERNAME", "password": "MLFLOW_TRACKING_PASSWORD"}
)
KUBEFLOW_SECRET = SecretSpec(
    "imgclf_kubeflow", {"username": "KUBEFLOW_USERNAME", "password": "KUBEFLOW_PASSWORD"}, optional=True
)


def _orchestrator(kind: str, config: RemoteStackConfig, with_kubeflow_login: bool) -> tuple[str, str, dict]:
    context = {"kubernetes_context": config.kubernetes_context} if config.kubernetes_context else {}
    if kind == "kubernetes":
        settings = {"kubernetes_namespace": config.namespace, "synchronous": True, **context}
        if not config.kubernetes_context:
            settings["incluster"] = True
        return "imgclf-k8s-orchestrator", "kubernetes", settings
    settings = {"synchronous": True, **context}
    if config.kubeflow_host:
        settings["kubeflow_hostname"] = config.kubeflow_host
    if config.kubeflow_user_namespace:
        settings["user_namespace"] = config.kubeflow_user_namespace
    if with_kubeflow_login:
        settings["client_username"] = KUBEFLOW_SECRET.reference("username")
        settings["client_password"] = KUBEFLOW_SECRET.reference("password")
    return "imgclf-kubeflow-orchestrator", "kubeflow", settings


def _image_builder(config: RemoteStackConfig) -> tuple[str, str, dict]:
    if config.image_builder == "local":
        return "imgclf-docker-builder", "local", {}
    settings: dict[str, Any] = {"kubernetes_namespace": config.namespace, "store_context_in_artifact_store": True}
    if config.kubernetes_context:
        settings["kubernetes_context"] = config.kubernetes_context
    return "imgclf-kaniko-builder", "kaniko", settings


def component_specs(kind: str, config: RemoteStackConfig, with_kubeflow_login: bool = False) -> dict:
    """Component type -> (name, flavor, configuration) of stack `kind` (kubernetes or kubeflow)."""
    from zenml.enums import StackComponentType as T

    if kind not in STACKS:
        raise ValueError(f"unknown stack kind {kind!r}: one of {sorted(STACKS)}")
    s3: dict[str, Any] = {
        "path": config.artifact_path,
        "key": S3_SECRET.reference("aws_access_key_id"),
        "secret": S3_SECRET.reference("aws_secret_access_key"),
    }
    if config.s3_endpoint:
        s3["client_kwargs"] = {"endpoint_url": config.s3_endpoint}
    return {
        T.ORCHESTRATOR: _orchestrator(kind, config, with_kubeflow_login),
        T.ARTIFACT_STORE: ("imgclf-s3", "s3", s3),
        T.CONTAINER_REGISTRY: ("imgclf-registry", "default", {"uri": config.registry_uri}),
        T.IMAGE_BUILDER: _image_builder(config),
        T.EXPERIMENT_TRACKER: (
            "imgclf-remote-mlflow-tracker",
            "mlflow",
            {
                "tracking_uri": config.mlflow_uri,
                "experiment_name": MLFLOW_EXPERIMENT,
                "tracking_username": MLFLOW_SECRET.reference("username"),
                "tracking_password": MLFLOW_SECRET.reference("password"),
            },
        ),
        T.MODEL_REGISTRY: ("imgclf-remote-mlflow-registry", "mlflow", {}),
    }


NEEDS_KUBERNETES = (
    "registering this stack needs the `kubernetes` Python package on this machine, as running on it does: "
    "`zenml integration install kubeflow kubernetes s3 mlflow`"
)


class MissingCredentials(RuntimeError):
    """A secret the stack references is neither registered nor given through the environment."""


def ensure_secret(client, spec: SecretSpec, environ: dict[str, str]) -> bool:
    """Create or update secret `spec` from the environment; True when the secret is registered afterwards."""
    values = {key: environ.get(variable, "") for key, variable in spec.keys.items()}
    given = {key: value for key, value in values.items() if value}
    try:
        client.get_secret(spec.name, allow_partial_name_match=False)
        exists = True
    except KeyError:
        exists = False
    if given and len(given) < len(values):
        missing = [spec.keys[key] for key in values if key not in given]
        raise MissingCredentials(f"secret {spec.name}: set {', '.join(missing)} too (or none of its variables)")
    if given and exists:
        client.update_secret(spec.name, add_or_update_values=given)
    elif given:
        client.create_secret(spec.name, values=given)
    elif not exists and not spec.optional:
        raise MissingCredentials(
            f"secret {spec.name} is not registered in this ZenML store: set {', '.join(spec.keys.values())} "
            f"once (or `zenml secret create {spec.name} " + " ".join(f"--{key}=..." for key in spec.keys) + "`)"
        )
    return bool(given) or exists


def _ensure_component(client, ctype, name: str, flavor: str, configuration: dict) -> None:
    try:
        existing = client.get_stack_component(ctype, name, allow_name_prefix_match=False)
    except KeyError:
        client.create_stack_component(name=name, flavor=flavor, component_type=ctype, configuration=configuration)
        return
    if existing.flavor_name != flavor:
        raise ValueError(f"{ctype.value} {name!r} exists with flavor {existing.flavor_name!r}, not {flavor!r}")
    stale = [key for key in existing.configuration if key not in configuration]
    if existing.configuration != configuration:
        # a key dropped from the configuration (e.g. the kubeflow host) goes back to the flavor's default
        client.update_stack_component(name, ctype, configuration={**configuration, **dict.fromkeys(stale)})


def register_stack(kind: str, config: RemoteStackConfig, environ: dict[str, str] | None = None) -> str:
    """Register (or update) the secrets, components and stack of `kind`; return the stack's name."""
    from zenml.client import Client

    environ = dict(os.environ if environ is None else environ)
    client = Client()
    ensure_secret(client, S3_SECRET, environ)
    ensure_secret(client, MLFLOW_SECRET, environ)
    login = kind == "kubeflow" and ensure_secret(client, KUBEFLOW_SECRET, environ)
    components = {}
    for ctype, (name, flavor, configuration) in component_specs(kind, config, login).items():
        _ensure_component(client, ctype, name, flavor, configuration)
        components[ctype] = name
    stack = STACKS[kind]
    try:
        client.get_stack(stack, allow_name_prefix_match=False)
        client.update_stack(stack, component_updates={ctype: [name] for ctype, name in components.items()})
    except KeyError:
        client.create_stack(name=stack, components=components)
    return stack


def describe(stack: str) -> dict:
    """What the store holds for `stack`: type -> {name, flavor, configuration} (secrets stay references)."""
    from zenml.client import Client

    model = Client().get_stack(stack, allow_name_prefix_match=False)
    return {
        ctype.value: {"name": c.name, "flavor": c.flavor_name, "configuration": c.configuration}
        for ctype, (c, *_) in model.components.items()
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("kinds", nargs="+", choices=sorted(STACKS), help="stacks to register")
    for name, field in RemoteStackConfig.model_fields.items():
        option = "--" + name.replace("_", "-")
        text = f"{field.description or name} (env {ENV_PREFIX}{name.upper()}, default {field.default!r})"
        parser.add_argument(option, dest=name, default=None, help=text)
    parser.add_argument("--activate", choices=sorted(STACKS.values()), help="make this stack the active one")
    parser.add_argument(
        "--json", metavar="FILE", help="write what the store holds for each stack as JSON ('-': stdout)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = vars(parser.parse_args(argv))
    kinds, activate, as_json = args.pop("kinds"), args.pop("activate"), args.pop("json")
    try:
        config = config_from(args, dict(os.environ))
    except ValidationError as error:  # names the field and what it must look like
        parser.error(f"{error.error_count()} bad setting(s) (options or {ENV_PREFIX}*): {error}")
    try:
        stacks = [register_stack(kind, config) for kind in dict.fromkeys(kinds)]
    except MissingCredentials as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ImportError as error:  # ZenML 0.98's Kubeflow config builds Kubernetes pod settings at validation
        print(f"error: {NEEDS_KUBERNETES} ({error})", file=sys.stderr)
        return 2
    if activate:
        from zenml.client import Client

        Client().activate_stack(activate)
    if as_json == "-":
        print(json.dumps({stack: describe(stack) for stack in stacks}, indent=2, sort_keys=True))
    elif as_json:  # a file, since ZenML logs to stdout too
        Path(as_json).write_text(json.dumps({stack: describe(stack) for stack in stacks}, indent=2, sort_keys=True))
    print("registered: " + ", ".join(stacks) + (f"; active: {activate}" if activate else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
