"""The champion: the registered version a new model would replace (the staging holder, else the production
holder), fetched from the registry to be scored beside the new one. A broken entry must not stop a new
model from being evaluated: it is reported instead."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from imgclf.data.decoded import DecodedSplits
from imgclf.data.manifest import DatasetManifest
from imgclf.evaluate.comparison import ModelComparison, compare_models
from imgclf.inference import predict_logits
from imgclf.models.trained import TrainedModel
from imgclf.registry import alias_version, fetch_bundle
from imgclf.scores import softmax

log = logging.getLogger(__name__)

CHAMPION_ALIASES = ("staging", "production")  # the first that has a holder is the champion


@dataclass
class Champion:
    """The version to beat, to be scored on the same test images as the challenger."""

    model: TrainedModel
    label: str  # e.g. "models:/image-classifier/3 (@staging)"
    version: str = ""
    alias: str = ""


def champion_label(name: str, version: str, alias: str) -> str:
    """How reports, records and logs name a champion: models:/NAME/VERSION (@ALIAS)."""
    return f"models:/{name}/{version} (@{alias})"


def load_champion(
    name: str, aliases: Sequence[str] = CHAMPION_ALIASES, tracking_uri: str | None = None
) -> tuple[Champion | None, str]:
    """(the first of `aliases` that has a holder, loaded; "") or (None, why there is none to compare
    with: empty when no alias has a holder, the error when it cannot be loaded)."""
    for alias in aliases:
        version = alias_version(name, alias, tracking_uri)
        if version is not None:
            break
    else:
        return None, ""
    uri, label = f"models:/{name}/{version}", champion_label(name, version, alias)
    try:
        with tempfile.TemporaryDirectory(prefix="imgclf-champion-") as tmp:
            bundle, _ = fetch_bundle(uri, tmp, tracking_uri)
            model = TrainedModel.load(bundle)
    except Exception as exc:  # any failure: reported in the evaluation instead of stopping it
        log.warning("could not load the champion %s: %s", uri, exc)
        return None, f"champion {label} could not be loaded, so no comparison: {type(exc).__name__}: {exc}"
    return Champion(model=model, label=label, version=version, alias=alias), ""


def compare_with_champion(
    champion: Champion | None,
    champion_note: str,
    manifest: DatasetManifest,
    y_true: np.ndarray,
    probs: np.ndarray,
    trained: TrainedModel,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[ModelComparison | None, str]:
    """Score the champion on the manifest's test images and compare it with `trained`'s `probs` there:
    (the comparison, a sentence saying what was compared), or (None, why not)."""
    class_names = trained.class_names
    if champion is None:
        return None, champion_note or "no staging or production model in the registry: nothing to compare with"
    if list(champion.model.class_names) != list(class_names):
        return None, (
            f"champion {champion.label} has other classes ({len(champion.model.class_names)}: "
            f"{champion.model.class_names[:5]}...) than this model ({len(class_names)}); not comparable"
        )
    spec = champion.model.preprocess
    images = DecodedSplits(manifest, spec, class_names).test.images
    champion_probs = softmax(predict_logits(champion.model.build(), images, spec))
    result = compare_models(
        y_true, champion_probs, probs, n_bootstrap=n_bootstrap, seed=seed, n_classes=len(class_names)
    )
    note = f"compared with {champion.label}: {result.explain()}"
    if champion.model.info.get("data_hash") != trained.info.get("data_hash"):
        note += (
            "; caution: the champion was trained on other data (or its data is unknown), so some of these test "
            "images may have been in its training set"
        )
    return result, note
