"""The training_pipeline on a multi-label CSV manifest (digits tagged even / small / round, with a
`site` column): every step runs, evaluate scores mAP and exact-match accuracy with the thresholds
tuned on val at training, quantize checks INT8 on the label sets, and the ONNX files carry the thresholds."""

from __future__ import annotations

import csv
import shutil

import pytest

from conftest import fast_pipeline_run

pytestmark = pytest.mark.integration

TAGS = {
    d: [t for t, ok in (("even", d % 2 == 0), ("small", d < 5), ("round", d in (0, 6, 8, 9))) if ok] or ["none"]
    for d in range(10)
}


@pytest.fixture(scope="module")
def multilabel_run(digits_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("multilabel") / "digits"
    shutil.copytree(digits_dir, data)
    manifest = data / "tags.csv"  # paths relative to the CSV's folder
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "labels", "site"])
        for i, path in enumerate(sorted(data.glob("*/*.png"))):
            writer.writerow([path.relative_to(data).as_posix(), "|".join(TAGS[int(path.parent.name)]), "AB"[i % 2]])

    def edit(config: dict) -> None:
        config["model"]["name"] = "multilabel-classifier"
        for optional in ("distill_into", "prune"):
            config["steps"]["train"]["parameters"].pop(optional)
        # the budget decided from the data, through the YAML; one step an epoch keeps the run short
        config["steps"]["train"]["parameters"]["config"].update(image_size="auto", epochs="auto", max_steps_per_epoch=1)

    with fast_pipeline_run(manifest, tmp_path_factory.mktemp("config"), edit) as run:
        yield run


def test_multilabel_data_runs_through_every_step(multilabel_run):
    from zenml.enums import ExecutionStatus

    assert multilabel_run.status == ExecutionStatus.COMPLETED
    report = multilabel_run.steps["evaluate"].outputs["evaluation"][0].load()
    assert report.multi_label is not None and set(report.multi_label.thresholds) == {"even", "none", "round", "small"}
    meta = multilabel_run.steps["evaluate"].run_metadata
    assert meta["test_map"] == pytest.approx(report.multi_label.mean_average_precision)
    assert report.accuracy_ci_low <= report.accuracy <= report.accuracy_ci_high  # exact-match accuracy
    assert report.subgroups.skipped == {"site": "subgroup metrics are single-label only"}
    assert "single-label only" in report.comparison_note
    page = str(multilabel_run.steps["evaluate"].outputs["evaluation_report"][0].load())
    assert "exact-match accuracy" in page and "average precision" in page
    exported = multilabel_run.steps["quantize"].outputs["onnx_model"][0].load()
    assert exported.report.test_onnx_max_abs_logit_diff < 1e-3 and exported.report.test_images == report.n_images
    if exported.report.serve == "int8":  # agreement on multi-label = the same set of labels at logit >= 0
        assert exported.report.test_int8_top1_agreement >= 0.9


def test_thresholds_tuned_at_training_are_the_ones_evaluated_and_served(multilabel_run):
    from imgclf.bundle import onnx_metadata

    trained = multilabel_run.steps["train"].outputs["trained_model"][0].load()
    report = multilabel_run.steps["evaluate"].outputs["evaluation"][0].load()
    exported = multilabel_run.steps["quantize"].outputs["onnx_model"][0].load()
    stored = dict(zip(trained.class_names, trained.thresholds))
    assert report.multi_label.thresholds == stored  # evaluate decided with them, did not tune its own
    for model in (exported.onnx, exported.onnx_int8):
        if model is not None:
            assert onnx_metadata(model).thresholds == trained.thresholds


def test_auto_settings_are_decided_from_the_data(multilabel_run):
    meta = multilabel_run.steps["train"].run_metadata
    assert meta["image_size"] == 64  # 8x8 scans: the floor
    assert set(meta["budget"]) == {"image_size", "epochs"} and 5 <= meta["epochs_planned"] <= 30
