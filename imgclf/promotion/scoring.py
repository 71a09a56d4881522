"""Scoring a candidate and a stage's holder again, on the candidate's own test images as its training
run logged them (so the CLI, the promotion pipeline and CI compare on the same images as evaluate did)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from imgclf.data.decoded import DecodedSplits
from imgclf.data.manifest import DatasetManifest
from imgclf.evaluate.champion import Champion, champion_label, compare_with_champion
from imgclf.evaluate.comparison import ModelComparison
from imgclf.inference import predict_logits
from imgclf.models.trained import TrainedModel
from imgclf.promotion.rules import PromotionRules
from imgclf.registry import TEST_SPLIT_ARTIFACT, download_run_file, fetch_bundle, version_info
from imgclf.scores import softmax
from imgclf.stages import DATA_VERSION_TAG


class TestImagesUnavailable(RuntimeError):
    """The candidate's test images cannot be scored here: not logged, missing or changed on disk."""


def candidate_test_split(
    name: str, version: str, tracking_uri: str | None = None, data_root: str | Path | None = None
) -> DatasetManifest:
    """The test split the version's run logged, checked file by file against its sha256 (`data_root`:
    where the data is checked out here, when not where it was trained)."""
    info = version_info(name, version, tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        folder = download_run_file(info.run_id, TEST_SPLIT_ARTIFACT, tmp, tracking_uri)
        if folder is None:
            raise TestImagesUnavailable(
                f"version {version}'s run {info.run_id} logged no {TEST_SPLIT_ARTIFACT}: it was not trained by the "
                "training pipeline, so there are no test images to compare on"
            )
        manifest = DatasetManifest.read(folder, data_root)
    bad = [str(p) for p, sha in zip(manifest.absolute_paths(), manifest.records["sha256"]) if _sha256(p) != sha]
    if bad:
        data = info.tags.get(DATA_VERSION_TAG, "")
        raise TestImagesUnavailable(
            f"{len(bad)} of version {version}'s {len(manifest)} test images are missing or changed under "
            f"{manifest.root} (first: {bad[0]}); check out its data{f' ({data})' if data else ''}, e.g. `dvc pull`, "
            "or name where it is with data_root / --data-root"
        )
    return manifest


def score_pair(
    name: str,
    candidate: str,
    champion: str,
    champion_alias: str,
    rules: PromotionRules,
    tracking_uri: str | None = None,
    data_root: str | Path | None = None,
) -> tuple[ModelComparison | None, str]:
    """Candidate against champion (both registered versions) on the candidate's test images."""
    manifest = candidate_test_split(name, candidate, tracking_uri, data_root)
    if manifest.multi_label:
        return None, "not compared: the paired comparison is single-label only"
    with tempfile.TemporaryDirectory(prefix="imgclf-promotion-") as tmp:
        new = TrainedModel.load(fetch_bundle(f"models:/{name}/{candidate}", Path(tmp, "c"), tracking_uri)[0])
        old = TrainedModel.load(fetch_bundle(f"models:/{name}/{champion}", Path(tmp, "h"), tracking_uri)[0])
    test = DecodedSplits(manifest, new.preprocess, new.class_names).test
    probs = softmax(predict_logits(new.build(), test.images, new.preprocess))
    label = champion_label(name, champion, champion_alias)
    held = Champion(model=old, label=label, version=champion, alias=champion_alias)
    return compare_with_champion(held, "", manifest, test.targets, probs, new, rules.n_bootstrap, rules.seed)


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
