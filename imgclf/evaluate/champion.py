"""The model in production, fetched from the registry to be scored beside a new one. A broken
production entry must not stop a new model from being evaluated: it is reported instead."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass

from imgclf.models.trained import TrainedModel
from imgclf.registry import alias_version, fetch_bundle

log = logging.getLogger(__name__)


@dataclass
class Champion:
    """The model in production, to be scored on the same test images as the challenger."""

    model: TrainedModel
    label: str  # e.g. "models:/image-classifier/3 (@production)"


def load_champion(name: str, alias: str, tracking_uri: str | None = None) -> tuple[Champion | None, str]:
    """(the version `alias` points at, loaded; "") or (None, why there is none to compare with: empty
    when nothing holds the alias, the error when it cannot be loaded)."""
    version = alias_version(name, alias, tracking_uri)
    if version is None:
        return None, ""
    uri = f"models:/{name}/{version}"
    try:
        with tempfile.TemporaryDirectory(prefix="imgclf-production-") as tmp:
            bundle, _ = fetch_bundle(uri, tmp, tracking_uri)
            return Champion(model=TrainedModel.load(bundle), label=f"{uri} (@{alias})"), ""
    except Exception as exc:  # any failure: reported in the evaluation instead of stopping it
        log.warning("could not load the production model %s: %s", uri, exc)
        return (
            None,
            f"production model {uri} (@{alias}) could not be loaded, so no comparison: {type(exc).__name__}: {exc}",
        )
