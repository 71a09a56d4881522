"""The whole evaluation on a small real model: subgroups that find the degraded site, the comparison
with a production model, the self-contained HTML report (opened in headless Chromium), the model card
with the real numbers, multi-label evaluation, and the registry's production alias."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score

from conftest import ROOT
from imgclf.data.manifest import DatasetManifest
from imgclf.evaluate.champion import Champion
from imgclf.evaluate.evaluation import EvaluationConfig, evaluate_model
from imgclf.evaluate.gate import GateConfig
from imgclf.evaluate.model_card import ModelCardConfig, model_card
from imgclf.evaluate.report import render_html

CHROMIUM = Path(os.environ.get("IMGCLF_CHROMIUM") or "/usr/bin/chromium")  # Debian's, or what .ci/run found
FAST = EvaluationConfig(n_bootstrap=200, gradcam_images=3, misclassified_images=8, measure_latency=False)


@pytest.fixture(scope="module")
def two_site_manifest(small_model, tmp_path_factory):
    """The small model's data, with a `site` column: site B's test images are inverted (white digit
    on black becomes black on white), so the model must do worse there."""
    _trained, manifest = small_model
    root = tmp_path_factory.mktemp("two_sites")
    records = manifest.records.copy()
    records["site"] = ["B" if (i % 2 and split == "test") else "A" for i, split in enumerate(records["split"])]
    for row in records.itertuples():
        dst = root / row.path
        dst.parent.mkdir(parents=True, exist_ok=True)
        if row.site == "B":
            Image.fromarray(255 - np.asarray(Image.open(Path(manifest.root) / row.path).convert("L"))).save(dst)
            records.loc[row.Index, "sha256"] = hashlib.sha256(
                dst.read_bytes()
            ).hexdigest()  # new content, new cache key
        else:
            shutil.copy(Path(manifest.root) / row.path, dst)
    return DatasetManifest(str(root), records)


@pytest.fixture(scope="module")
def evaluation(small_model, two_site_manifest):
    trained, _ = small_model
    worse = dataclasses.replace(trained, state_dict={k: v.clone() for k, v in trained.state_dict.items()})
    head = [k for k in worse.state_dict if k.endswith("weight")][-1]
    worse.state_dict[head] = worse.state_dict[head][
        np.random.default_rng(0).permutation(worse.state_dict[head].shape[0])
    ]
    return evaluate_model(
        trained, two_site_manifest, GateConfig(min_accuracy=0.5), FAST, Champion(worse, "models:/m/1 (@production)")
    )


def test_subgroups_call_out_the_degraded_site(evaluation, two_site_manifest):
    sg = evaluation.report.subgroups
    rows = {r.value: r for r in sg.rows if r.column == "site"}
    assert set(rows) == {"A", "B"}
    test = two_site_manifest.subset("test")
    assert rows["A"].n_images + rows["B"].n_images == len(test)
    assert sg.worst["site"].value == "B"
    assert rows["B"].accuracy < rows["A"].accuracy - 0.2
    assert rows["B"].accuracy_ci_low <= rows["B"].accuracy <= rows["B"].accuracy_ci_high
    # the subgroup accuracies recombine to the overall accuracy
    overall = (rows["A"].accuracy * rows["A"].n_images + rows["B"].accuracy * rows["B"].n_images) / len(test)
    assert overall == pytest.approx(evaluation.report.accuracy)


def test_comparison_with_a_worse_production_model(evaluation):
    c = evaluation.report.comparison
    assert c.verdict == "challenger better" and c.significant
    assert c.challenger_accuracy == pytest.approx(evaluation.report.accuracy)
    assert c.champion_accuracy < c.challenger_accuracy and c.accuracy_ci_low > 0
    assert "models:/m/1" in evaluation.report.comparison_note


def test_identical_production_model_is_no_significant_difference(small_model):
    trained, manifest = small_model
    result = evaluate_model(trained, manifest, GateConfig(), FAST, Champion(trained, "same"))
    assert result.report.comparison.accuracy_delta == 0 and not result.report.comparison.significant
    assert result.report.comparison.verdict.startswith("no significant difference")


def test_no_production_model_and_other_classes_are_said_plainly(small_model):
    trained, manifest = small_model
    alone = evaluate_model(trained, manifest, GateConfig(), FAST, None)
    assert alone.report.comparison is None and "no staging or production model" in alone.report.comparison_note
    other = dataclasses.replace(trained, class_names=[f"c{i}" for i in range(len(trained.class_names))])
    mismatch = evaluate_model(trained, manifest, GateConfig(), FAST, Champion(other, "models:/m/2"))
    assert mismatch.report.comparison is None and "not comparable" in mismatch.report.comparison_note


def test_gate_verdict_uses_the_configured_thresholds(small_model):
    trained, manifest = small_model
    result = evaluate_model(trained, manifest, GateConfig(min_accuracy=0.999, min_macro_f1=0.5), FAST)
    assert not result.gate.passed
    assert [c.name for c in result.gate.failed_checks] == ["test_accuracy"]
    assert "0.999" in result.gate.explain()


def _report_html(evaluation) -> str:
    return render_html(
        evaluation.report, evaluation.gate, evaluation.figures, "digits <test>", {"architecture": "resnet10t"}
    )


def test_html_report_is_self_contained_and_complete(evaluation):
    page = _report_html(evaluation)
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) == len(evaluation.figures) == 6
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing outside the file
    r = evaluation.report
    for text in (
        f"{r.accuracy:.4f} [{r.accuracy_ci_low:.4f}, {r.accuracy_ci_high:.4f}]",
        "Worst site",
        "challenger better",
        "Quality gate PASSED",
        "digits &lt;test&gt;",
        "Grad-CAM: misclassified",
        f"{r.ece:.4f}",
    ):
        assert text in page, text


@pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("IMGCLF_REQUIRE_BROWSER"), reason=f"no Chromium at {CHROMIUM}"
)
def test_report_renders_in_headless_chromium_with_every_image_loaded(evaluation, tmp_path):
    open_in_chromium = runpy.run_path(str(ROOT / "infra" / "screenshot_report.py"))["open_in_chromium"]
    report = tmp_path / "report.html"
    report.write_text(_report_html(evaluation))
    shown = open_in_chromium(report, tmp_path / "report.png")
    assert shown["failed_requests"] == []
    assert [alt for alt, *_ in shown["images"]] == list(evaluation.figures)
    assert all(complete and width > 50 and height > 50 for _, complete, width, height in shown["images"]), shown[
        "images"
    ]
    assert {"Quality gate", "Metrics", "Subgroups", "Figures", "Against the champion"} <= set(shown["headings"])
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_model_card_holds_the_real_numbers(small_model, evaluation, two_site_manifest):
    trained, _ = small_model
    card = model_card(
        trained,
        two_site_manifest,
        evaluation.report,
        evaluation.gate,
        ModelCardConfig(purpose="Read handwritten digits.", limitations=["Only 8x8 scans."]),
        "digits",
        "7",
    )
    r = evaluation.report
    assert card.startswith("# Model card: digits (version 7)")
    assert "Read handwritten digits." in card and "Only 8x8 scans." in card
    assert f"{r.accuracy:.4f} [{r.accuracy_ci_low:.4f}, {r.accuracy_ci_high:.4f}]" in card
    assert f"{r.macro_f1:.4f} [{r.macro_f1_ci_low:.4f}, {r.macro_f1_ci_high:.4f}]" in card
    assert two_site_manifest.content_hash() in card or trained.info["data_hash"] in card
    splits = two_site_manifest.records["split"].value_counts()
    assert f"train {splits['train']}, val {splits['val']}, test {splits['test']}" in card
    assert "- Worst site: B, accuracy" in card
    assert "`resnet10t`" in card and "| epochs | 3 |" in card
    assert "Quality gate passed" in card
    assert "## What the service keeps" in card and "without metadata" in card and "at most 30 days" in card
    assert "prediction log keeps one row per answered image" in card and "never the image, its EXIF" in card
    for line in evaluation.report.notes:
        assert line in card
    t, p, count = max(
        ((i, j, c) for i, row in enumerate(r.confusion) for j, c in enumerate(row) if i != j), key=lambda x: x[2]
    )
    assert f"true {r.class_names[t]} predicted as {r.class_names[p]}: {count} of" in card


def test_multilabel_evaluation_matches_sklearn(full_digits_dir, tmp_path):
    from imgclf.augment.policy import AugmentPolicy
    from imgclf.data.cache import decoded_images
    from imgclf.data.decoded import DecodedSplits
    from imgclf.data.ingest import ingest_folder
    from imgclf.data.split import SplitConfig, stratified_split
    from imgclf.inference import predict_logits
    from imgclf.preprocess import PreprocessSpec
    from imgclf.train.config import TrainConfig
    from imgclf.train.loop import fit

    single = ingest_folder(full_digits_dir).records
    single = single.groupby("label").head(40)
    tags = {
        d: [t for t, ok in (("even", d % 2 == 0), ("small", d < 5), ("round", d in (0, 6, 8, 9))) if ok] or ["none"]
        for d in range(10)
    }
    records = single.assign(label=["|".join(sorted(tags[int(lbl)])) for lbl in single["label"]])
    manifest = stratified_split(DatasetManifest(str(full_digits_dir), records), SplitConfig(seed=0))
    assert manifest.multi_label
    names = manifest.class_names
    config = TrainConfig(arch="resnet10t", pretrained=False, image_size=32, epochs=2, lr=3e-3)
    spec = PreprocessSpec(image_size=32)
    trained = fit(DecodedSplits(manifest, spec), config, AugmentPolicy())
    result = evaluate_model(trained, manifest, GateConfig(min_accuracy=0.0), FAST)
    report = result.report
    ml = report.multi_label
    assert set(ml.thresholds) == set(names) and ml.mean_average_precision is not None

    test = manifest.subset("test")
    scores = 1 / (1 + np.exp(-predict_logits(trained.build(), decoded_images(test, spec), trained.preprocess)))
    y = test.label_matrix(names)
    pred = (scores >= np.array([ml.thresholds[n] for n in names])).astype(int)
    assert report.accuracy == pytest.approx(accuracy_score(y, pred))  # exact-match accuracy
    assert report.macro_f1 == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    assert report.metrics()["test_map"] == pytest.approx(ml.mean_average_precision)
    page = render_html(report, result.gate, result.figures, "multi", {})
    assert "exact-match accuracy" in page and "average precision" in page
    card = model_card(trained, manifest, report, result.gate)
    assert "mAP" in card and f"{report.accuracy:.4f}" in card


def test_the_champion_is_the_staging_holder_else_production(small_model, mlflow_uri, tmp_path):
    import mlflow

    from imgclf.evaluate.champion import load_champion
    from imgclf.registry import describe_version, fetch_bundle, move_stage, register_bundle

    trained, _ = small_model
    assert load_champion("digits", tracking_uri=mlflow_uri) == (None, "")  # no model at all
    first = register_bundle(trained.save(tmp_path / "bundle"), "digits")
    assert load_champion("digits", tracking_uri=mlflow_uri) == (None, "")  # a model, no stage held
    move_stage("digits", "staging", first.version, expect=None, reason="test", mirrors=[])
    move_stage("digits", "production", first.version, expect=None, reason="test", mirrors=[])
    champion, _ = load_champion("digits", tracking_uri=mlflow_uri)
    assert (champion.version, champion.alias) == (first.version, "production")  # staging is empty
    registered = register_bundle(trained.save(tmp_path / "bundle"), "digits")
    move_stage("digits", "staging", registered.version, expect=None, reason="test", mirrors=[])
    champion, _ = load_champion("digits", tracking_uri=mlflow_uri)
    assert (champion.version, champion.alias, champion.label) == (
        registered.version,
        "staging",
        f"models:/digits/{registered.version} (@staging)",
    )
    assert champion.model.class_names == trained.class_names

    from imgclf.cli import main

    outsider = register_bundle(trained.save(tmp_path / "bundle"), "digits")  # registered without a training run
    with pytest.raises(SystemExit, match=f"version {outsider.version}'s run .* logged no evaluation/test_split"):
        main(["promote", outsider.version, "--to", "staging", "--model-name", "digits"])
    describe_version("digits", registered.version, "# Model card", mlflow_uri)
    assert mlflow.MlflowClient(mlflow_uri).get_model_version("digits", registered.version).description == "# Model card"
    bundle, _ = fetch_bundle(f"models:/digits/{registered.version}", tmp_path / "fetched", mlflow_uri)
    assert (bundle / "model.json").is_file()
