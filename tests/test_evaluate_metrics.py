"""Evaluation metrics against scikit-learn, calibration by hand, bootstrap / McNemar / paired
bootstrap on constructed cases, threshold tuning, the quality gate, and latency report sanity."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging

import numpy as np
import pandas as pd
import pytest
from pydantic import TypeAdapter
from scipy import stats as sps
from sklearn import metrics as skm

from imgclf.evaluate.comparison import compare_models
from imgclf.evaluate.gate import GateCheck, GateConfig, quality_gate
from imgclf.evaluate.metrics import (
    EvaluationReport,
    calibration,
    evaluate_predictions,
    evaluate_probabilities,
)
from imgclf.evaluate.multilabel import MultiLabelReport, evaluate_multilabel, tune_thresholds
from imgclf.evaluate.stats import bootstrap_ci, mcnemar, paired_bootstrap
from imgclf.evaluate.subgroups import subgroup_metrics
from imgclf.latency import LatencyReport, measure_latency, measure_model_latency
from imgclf.scores import softmax

CLASSES = ["a", "b", "c", "d", "e", "f", "g"]


def _fake_model(n: int = 300, k: int = len(CLASSES), skill: float = 2.0, seed: int = 0):
    """Labels and softmax outputs of a decent but imperfect classifier (no ties)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += skill
    return y, softmax(logits)


@pytest.fixture(scope="module")
def single():
    y, probs = _fake_model()
    return y, probs, evaluate_probabilities(y, probs, CLASSES, n_bootstrap=500, seed=0)


# -- single-label metrics vs scikit-learn -----------------------------------------------------------
def test_label_metrics_match_sklearn(single):
    y, probs, r = single
    pred = probs.argmax(1)
    assert 0.3 < r.accuracy < 0.95  # the fixture is neither trivial nor hopeless
    assert r.n_images == 300
    assert r.accuracy == pytest.approx(skm.accuracy_score(y, pred))
    for avg in ("macro", "weighted"):
        p, rc, f1, _ = skm.precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        assert getattr(r, f"{avg}_precision") == pytest.approx(p)
        assert getattr(r, f"{avg}_recall") == pytest.approx(rc)
        assert (r.macro_f1 if avg == "macro" else r.weighted_f1) == pytest.approx(f1)
    p, rc, f1, support = skm.precision_recall_fscore_support(y, pred, labels=range(len(CLASSES)), zero_division=0)
    for i, name in enumerate(CLASSES):
        pc = r.per_class[name]
        assert (pc["precision"], pc["recall"], pc["f1"], pc["support"]) == pytest.approx(
            (p[i], rc[i], f1[i], support[i])
        )
        assert r.per_class_accuracy[name] == pytest.approx(rc[i])  # single-label per-class accuracy = recall
    assert r.confusion == skm.confusion_matrix(y, pred).tolist()
    np.testing.assert_allclose(r.confusion_normalized, skm.confusion_matrix(y, pred, normalize="true"))


def test_probability_metrics_match_sklearn(single):
    y, probs, r = single
    labels = list(range(len(CLASSES)))
    assert r.top_k_accuracy["1"] == pytest.approx(r.accuracy)
    assert r.top_k_accuracy["5"] == pytest.approx(skm.top_k_accuracy_score(y, probs, k=5, labels=labels))
    assert r.top_k_accuracy["5"] > r.top_k_accuracy["1"]
    assert r.roc_auc_macro == pytest.approx(
        skm.roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=labels)
    )
    per_class = skm.roc_auc_score(y, probs, multi_class="ovr", average=None, labels=labels)
    assert [r.roc_auc_per_class[n] for n in CLASSES] == pytest.approx(list(per_class))
    assert r.roc_auc_skipped == {}


def test_ties_top1_equals_accuracy_and_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 4, 200)
    counts = rng.integers(1, 4, (200, 4)).astype(float)  # small integers: ties within rows and columns
    counts[np.arange(200), y] += rng.integers(0, 2, 200)
    probs = counts / counts.sum(axis=1, keepdims=True)
    assert (probs == probs.max(axis=1, keepdims=True)).sum(axis=1).max() > 1  # the fixture has row ties
    r = evaluate_probabilities(y, probs, ["w", "x", "y", "z"], n_bootstrap=0)
    assert r.top_k_accuracy["1"] == pytest.approx(r.accuracy) == pytest.approx(np.mean(probs.argmax(1) == y))
    for i, name in enumerate(["w", "x", "y", "z"]):
        assert r.roc_auc_per_class[name] == pytest.approx(skm.roc_auc_score(y == i, probs[:, i]))


def test_top_k_above_class_count_is_left_out_and_said():
    y, probs = _fake_model(n=60, k=3)
    r = evaluate_probabilities(y, probs, ["x", "y", "z"], top_k=(1, 2, 5), n_bootstrap=0)
    assert set(r.top_k_accuracy) == {"1", "2"}
    assert r.top_k_accuracy["2"] == pytest.approx(skm.top_k_accuracy_score(y, probs, k=2))
    assert "test_top5_accuracy" not in r.metrics()
    assert any("k=[5]" in note for note in r.notes)


def test_roc_auc_skips_a_class_absent_from_test_and_says_so():
    y, probs = _fake_model(n=120, k=4, seed=3)
    keep = y != 2
    y, probs = y[keep], probs[keep]
    r = evaluate_probabilities(y, probs, ["w", "x", "y", "z"], n_bootstrap=0)
    assert set(r.roc_auc_skipped) == {"y"} and "no test images" in r.roc_auc_skipped["y"]
    expected = [skm.roc_auc_score(y == i, probs[:, i]) for i in (0, 1, 3)]
    assert r.roc_auc_macro == pytest.approx(np.mean(expected))
    assert r.per_class_accuracy["y"] is None and r.per_class["y"]["support"] == 0
    assert any("ROC-AUC skipped" in n for n in r.notes) and any("no test images" in n for n in r.notes)
    assert r.confusion_normalized[2] == [0.0, 0.0, 0.0, 0.0]
    # macro F1 averages the classes present in y_true or y_pred, as sklearn's default does
    assert r.macro_f1 == pytest.approx(skm.f1_score(y, probs.argmax(1), average="macro"))


def test_roc_auc_is_skipped_when_every_test_image_has_one_class():
    y = np.zeros(10, dtype=int)
    probs = softmax(np.random.default_rng(0).normal(size=(10, 2)))
    r = evaluate_probabilities(y, probs, ["x", "y"], n_bootstrap=0)
    assert r.roc_auc_macro is None and set(r.roc_auc_skipped) == {"x", "y"}
    assert "no negatives" in r.roc_auc_skipped["x"] and "test_roc_auc_macro" not in r.metrics()


def test_a_class_never_seen_nor_predicted_does_not_drag_macro_f1_down():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 1])
    r = evaluate_predictions(y_true, y_pred, ["a", "b", "c", "unused"], n_bootstrap=0)
    assert r.macro_f1 == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))  # 3 classes, not 4
    assert r.per_class["unused"]["support"] == 0 and r.per_class_accuracy["unused"] is None


def test_hard_prediction_wrapper_keeps_the_old_contract():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0, 2])
    r = evaluate_predictions(y_true, y_pred, ["a", "b", "c"])
    assert r.accuracy == pytest.approx(5 / 7) and r.confusion == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    assert r.macro_f1 == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    assert r.weighted_f1 == pytest.approx(skm.f1_score(y_true, y_pred, average="weighted"))
    assert r.ece is None and r.roc_auc_macro is None and r.top_k_accuracy == {}
    assert r.accuracy_ci_low <= r.accuracy <= r.accuracy_ci_high


def test_inputs_are_checked():
    y, probs = _fake_model(n=20, k=3)
    with pytest.raises(ValueError, match="softmax"):
        evaluate_probabilities(y, np.log(probs), ["x", "y", "z"])  # logits, not probabilities
    with pytest.raises(ValueError, match="outside"):
        evaluate_probabilities(np.full(20, 3), probs, ["x", "y", "z"])
    with pytest.raises(ValueError, match="shape"):
        evaluate_probabilities(y, probs[:, :2], ["x", "y", "z"])
    with pytest.raises(ValueError, match="empty"):
        evaluate_predictions(np.array([], dtype=int), np.array([], dtype=int), ["x"])


def test_metrics_dict_has_the_documented_keys_as_finite_floats(single):
    _, _, r = single
    m = r.metrics()
    assert set(m) == {
        "test_accuracy",
        "test_macro_f1",
        "test_weighted_f1",
        "test_ece",
        "test_roc_auc_macro",
        "test_top5_accuracy",
        "test_accuracy_ci_low",
        "test_accuracy_ci_high",
        "test_macro_f1_ci_low",
        "test_macro_f1_ci_high",
    }
    assert all(type(v) is float and np.isfinite(v) for v in m.values())
    assert m["test_ece"] == r.ece and m["test_accuracy_ci_low"] == r.accuracy_ci_low
    latency = LatencyReport(p50_ms=3.0, p95_ms=4.0, batch32_images_per_s=900.0)
    m2 = r.with_latency(latency).metrics()
    assert (m2["latency_p50_ms"], m2["latency_p95_ms"], m2["batch32_images_per_s"]) == (3.0, 4.0, 900.0)
    assert "latency_p50_ms" not in m  # with_latency returns a copy


def _json_round_trip(obj):
    """What the report materializer does: asdict -> JSON -> TypeAdapter(type).validate_python."""
    text = json.dumps(dataclasses.asdict(obj), allow_nan=False)  # every field is plain, finite JSON
    return TypeAdapter(type(obj)).validate_python(json.loads(text))


def test_report_round_trips_through_json_like_the_materializer(single):
    y, probs, r = single
    assert _json_round_trip(r) == r
    gate = quality_gate(r, GateConfig(min_accuracy=0.5, max_latency_p50_ms=10))
    back = _json_round_trip(gate)
    assert back == gate and isinstance(back.checks[0], GateCheck)
    # the nested reports come back as their dataclasses, with ints still ints
    site = np.array(["A", "B"])[np.arange(len(y)) % 2]
    full = dataclasses.replace(
        r,
        subgroups=subgroup_metrics(pd.DataFrame({"site": site}), y, probs.argmax(1), len(CLASSES), n_bootstrap=50),
        comparison=compare_models(y, np.roll(probs, 1, axis=0), probs, n_bootstrap=50),
        comparison_note="compared",
    )
    back = _json_round_trip(full)
    assert back == full and back.subgroups.worst["site"].value in ("A", "B")
    assert back.comparison.metrics() == full.comparison.metrics() and back.metrics() == full.metrics()
    assert type(back.per_class["a"]["support"]) is int
    ym, sm = _multilabel()
    ml = EvaluationReport(
        ["cat", "dog", "in", "out"],
        len(ym),
        0.5,
        0.5,
        [],
        multi_label=evaluate_multilabel(ym, sm, ["cat", "dog", "in", "out"]),
    )
    back = _json_round_trip(ml)
    assert (
        back == ml
        and isinstance(back.multi_label, MultiLabelReport)
        and back.metrics()["test_map"] == ml.metrics()["test_map"]
    )


# -- calibration --------------------------------------------------------------------------------
def test_ece_and_reliability_diagram_by_hand():
    # 4 bins of 0.25. Top-1 confidences: 0.9 (right), 0.8 (right), 0.6 (wrong), 0.6 (right).
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 1, 1, 1])
    ece, diagram = calibration(y, probs, n_bins=4)
    # bin (0.5, 0.75]: items 3 (conf 0.6, wrong) and 4 (conf 0.6, right): |0.5 - 0.6| * 2/4 = 0.05
    # bin (0.75, 1]:   items 1, 2 (conf 0.9, 0.8, both right): |1 - 0.85| * 2/4 = 0.075
    assert ece == pytest.approx(0.125)
    assert diagram["bin_edges"] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    assert diagram["counts"] == [0, 0, 2, 2]
    assert diagram["confidence"][:2] == [None, None] and diagram["confidence"][2:] == pytest.approx([0.6, 0.85])
    assert diagram["accuracy"][2:] == pytest.approx([0.5, 1.0])
    # a perfectly confident, perfectly right model is perfectly calibrated
    assert calibration(np.array([0, 1]), np.eye(2), n_bins=10)[0] == 0.0


def test_reliability_bins_are_right_closed():
    # confidences exactly on the edges 0.5 and 0.75 belong to the bins they close: (0.25, 0.5], (0.5, 0.75]
    probs = np.array([[0.5, 0.25, 0.25], [0.75, 0.125, 0.125], [1.0, 0.0, 0.0]])
    _, diagram = calibration(np.array([0, 0, 0]), probs, n_bins=4)
    assert diagram["counts"] == [0, 1, 1, 1]


# -- bootstrap, paired bootstrap, McNemar, comparison -----------------------------------------------
def test_bootstrap_ci_contains_estimate_is_seeded_and_narrows_with_more_data():
    y, probs = _fake_model(n=300)
    ci = bootstrap_ci("accuracy", y, probs, n=1000, seed=7)
    assert ci["estimate"] == pytest.approx(skm.accuracy_score(y, probs.argmax(1)))
    assert ci["ci_low"] < ci["estimate"] < ci["ci_high"]
    assert bootstrap_ci("accuracy", y, probs, n=1000, seed=7) == ci
    assert bootstrap_ci("accuracy", y, probs, n=1000, seed=8) != ci
    f1 = bootstrap_ci("macro_f1", y, probs, n=1000, seed=7)
    assert f1["estimate"] == pytest.approx(skm.f1_score(y, probs.argmax(1), average="macro"))
    assert f1["ci_low"] < f1["estimate"] < f1["ci_high"]
    y_big, probs_big = _fake_model(n=3000)
    big = bootstrap_ci("accuracy", y_big, probs_big, n=1000, seed=7)
    assert (big["ci_high"] - big["ci_low"]) < 0.5 * (ci["ci_high"] - ci["ci_low"])
    # the accuracy CI width is close to the normal approximation 2 * 1.96 * sqrt(p(1-p)/n)
    p = ci["estimate"]
    assert ci["ci_high"] - ci["ci_low"] == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / 300), rel=0.2)


def test_vectorised_bootstrap_equals_a_callable_metric_on_the_same_resamples():
    y, probs = _fake_model(n=80, seed=5)
    pred = probs.argmax(1)
    fast = bootstrap_ci("macro_f1", y, pred, n=50, seed=1)
    slow = bootstrap_ci(lambda t, p: skm.f1_score(t, p, average="macro"), y, pred, n=50, seed=1)
    assert fast == pytest.approx(slow)


def test_report_bootstrap_is_seeded(single):
    y, probs, r = single
    again = evaluate_probabilities(y, probs, CLASSES, n_bootstrap=500, seed=0)
    other = evaluate_probabilities(y, probs, CLASSES, n_bootstrap=500, seed=1)
    assert (again.accuracy_ci_low, again.macro_f1_ci_high) == (r.accuracy_ci_low, r.macro_f1_ci_high)
    assert (other.accuracy_ci_low, other.accuracy_ci_high, other.macro_f1_ci_low) != (
        r.accuracy_ci_low,
        r.accuracy_ci_high,
        r.macro_f1_ci_low,
    )
    assert r.accuracy_ci_low < r.accuracy < r.accuracy_ci_high
    assert r.macro_f1_ci_low < r.macro_f1 < r.macro_f1_ci_high


def test_a_slow_bootstrap_logs_its_progress_and_a_quick_one_stays_quiet(monkeypatch, caplog):
    from imgclf.evaluate import stats

    y, probs = _fake_model(n=50)
    with caplog.at_level(logging.INFO, logger="imgclf.evaluate.stats"):
        bootstrap_ci("accuracy", y, probs, n=200)
    assert caplog.records == []
    monkeypatch.setattr(stats, "Progress", functools.partial(stats.Progress, every_s=0.0))  # every resample is "slow"
    with caplog.at_level(logging.INFO, logger="imgclf.evaluate.stats"):
        bootstrap_ci(lambda t, p: float(np.mean(t == p)), y, probs.argmax(1), n=5)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("bootstrap of <lambda>: 1/5 resamples") and lines[-1].startswith(
        "bootstrap of <lambda>: 5 resamples in"
    )


def _two_models(n: int = 400, acc_a: float = 0.7, acc_b: float = 0.9, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    wrong = (y + 1) % 4
    a = np.where(rng.random(n) < acc_a, y, wrong)
    b = np.where(rng.random(n) < acc_b, y, wrong)
    return y, a, b


def test_identical_models_show_no_difference():
    y, a, _ = _two_models()
    mc = mcnemar(y, a, a)
    assert (mc["b"], mc["c"], mc["p_value"]) == (0, 0, 1.0)
    pb = paired_bootstrap(y, a, a, "accuracy", n=500, seed=0)
    assert pb["delta"] == 0 and pb["ci_low"] == pb["ci_high"] == 0 and pb["p_value"] == 1.0
    cmp = compare_models(y, a, a, n_bootstrap=300)
    assert not cmp.significant and cmp.verdict == "no significant difference at 95%"


def test_a_clearly_better_challenger_is_significant_both_ways():
    y, a, b = _two_models()
    mc = mcnemar(y, a, b)
    assert mc["method"] == "chi2_continuity" and mc["c"] > mc["b"] and mc["p_value"] < 1e-6
    for metric in ("accuracy", "macro_f1"):
        pb = paired_bootstrap(y, a, b, metric, n=1000, seed=0)
        assert pb["delta"] > 0.1 and pb["ci_low"] > 0 and pb["p_value"] < 0.01
    better = compare_models(y, a, b, n_bootstrap=1000)
    assert better.significant and better.verdict == "challenger better"
    assert better.accuracy_delta == pytest.approx((b == y).mean() - (a == y).mean())
    assert "challenger better" in better.explain() and "McNemar" in better.explain()
    worse = compare_models(y, b, a, n_bootstrap=1000)
    assert worse.verdict == "challenger worse" and worse.accuracy_delta < 0
    assert set(better.metrics()) >= {"compare_accuracy_delta", "compare_mcnemar_p_value", "champion_test_accuracy"}
    json.dumps(dataclasses.asdict(better), allow_nan=False)


def test_mcnemar_matches_the_textbook_formulas():
    # b=2, c=9: exact binomial, two-sided
    y = np.zeros(30, dtype=int)
    a = np.array([0] * 2 + [1] * 9 + [0] * 19)
    b = np.array([1] * 2 + [0] * 9 + [0] * 19)
    mc = mcnemar(y, a, b)
    assert (mc["b"], mc["c"], mc["method"]) == (2, 9, "exact")
    assert mc["p_value"] == pytest.approx(sps.binomtest(2, 11, 0.5).pvalue)
    # b=10, c=30: chi-square with continuity, (|10-30|-1)^2 / 40
    y = np.zeros(50, dtype=int)
    a = np.array([0] * 10 + [1] * 30 + [0] * 10)
    b = np.array([1] * 10 + [0] * 30 + [0] * 10)
    mc = mcnemar(y, a, b)
    assert mc["method"] == "chi2_continuity" and mc["statistic"] == pytest.approx(19**2 / 40)
    assert mc["p_value"] == pytest.approx(sps.chi2.sf(19**2 / 40, 1))
    statsmodels = pytest.importorskip("statsmodels.stats.contingency_tables")
    ref = statsmodels.mcnemar([[10, 10], [30, 0]], exact=False, correction=True)
    assert mc["p_value"] == pytest.approx(ref.pvalue)


def test_a_small_difference_on_few_items_is_not_called_significant():
    y, a, _ = _two_models(n=60, seed=2)
    b = a.copy()
    flip = np.flatnonzero(a != y)[:2]
    b[flip] = y[flip]  # challenger fixes 2 of 60 items
    cmp = compare_models(y, a, b, n_bootstrap=1000)
    assert cmp.accuracy_delta == pytest.approx(2 / 60)
    assert not cmp.significant and cmp.verdict.startswith("no significant difference")
    assert cmp.mcnemar_method == "exact" and cmp.mcnemar_p_value == pytest.approx(0.5)


# -- multi-label ----------------------------------------------------------------------------------
def _multilabel(n: int = 200, n_labels: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_labels)) < 0.3).astype(int)
    scores = np.clip(0.35 * y + rng.random((n, n_labels)) * 0.65, 0, 1)
    return y, scores


def test_multilabel_ap_map_and_f1_match_sklearn():
    y, s = _multilabel()
    names = ["cat", "dog", "indoor", "outdoor"]
    thr = np.array([0.3, 0.4, 0.5, 0.6])
    r = evaluate_multilabel(y, s, names, thr)
    assert isinstance(r, MultiLabelReport)
    assert [r.average_precision[n] for n in names] == pytest.approx(
        list(skm.average_precision_score(y, s, average=None))
    )
    assert r.mean_average_precision == pytest.approx(skm.average_precision_score(y, s, average="macro"))
    pred = (s >= thr).astype(int)
    assert r.micro_f1 == pytest.approx(skm.f1_score(y, pred, average="micro"))
    assert r.macro_f1 == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert [r.per_label[n]["f1"] for n in names] == pytest.approx(list(skm.f1_score(y, pred, average=None)))
    assert r.thresholds == pytest.approx(dict(zip(names, thr)))
    assert set(r.metrics()) == {"test_map", "test_micro_f1", "test_macro_f1"}
    # a label without positives: AP skipped and said, mAP over the rest
    y2 = y.copy()
    y2[:, 1] = 0
    r2 = evaluate_multilabel(y2, s, names, 0.5)
    assert "dog" in r2.ap_skipped and "dog" not in r2.average_precision
    assert r2.mean_average_precision == pytest.approx(
        np.mean([r2.average_precision[n] for n in ("cat", "indoor", "outdoor")])
    )


def test_threshold_tuning_finds_the_known_best_threshold():
    # label 0: positives 0.9, 0.8, 0.7, 0.6; negatives 0.65, 0.3, 0.2, 0.1. Keeping the top 5
    # (4 positives + the 0.65 negative) gives F1 = 8/9, the best: cut halfway between 0.6 and 0.3.
    # label 1: positives 0.9, 0.8, 0.4; negatives 0.5, 0.2, 0.15, 0.1, 0.05. Keeping 0.9..0.4
    # (tp 3, fp 1) gives 6/7 > 0.8 (top 2): cut halfway between 0.4 and 0.2.
    s = np.array([[0.6, 0.9], [0.7, 0.8], [0.8, 0.4], [0.9, 0.1], [0.1, 0.2], [0.2, 0.15], [0.3, 0.05], [0.65, 0.5]])
    y = np.array([[1, 1], [1, 1], [1, 1], [1, 0], [0, 0], [0, 0], [0, 0], [0, 0]])
    thr = tune_thresholds(y, s)
    assert thr[0] == pytest.approx(0.45)
    assert thr[1] == pytest.approx(0.3)
    f1 = skm.f1_score(y, (s >= thr).astype(int), average=None)
    assert f1 == pytest.approx([8 / 9, 6 / 7])
    # no other threshold does better on validation
    for j in range(2):
        for t in np.unique(s[:, j]):
            assert skm.f1_score(y[:, j], (s[:, j] >= t).astype(int)) <= f1[j] + 1e-12
    # equal F1 at two cuts (keep 1: 2/3, keep 4: 2/3): the lower threshold wins
    tie = tune_thresholds(np.array([[1], [0], [0], [1], [0]]), np.array([[0.9], [0.8], [0.7], [0.6], [0.5]]))
    assert tie[0] == pytest.approx(0.55)
    # a label with no positive validation image gets the default
    assert tune_thresholds(np.zeros((4, 1), dtype=int), np.random.default_rng(0).random((4, 1)), default=0.5)[0] == 0.5


def test_tuned_thresholds_beat_a_fixed_one_on_held_out_data():
    y_val, s_val = _multilabel(n=400, seed=1)
    y_test, s_test = _multilabel(n=400, seed=2)
    s_val, s_test = s_val * 0.6, s_test * 0.6  # scores squashed below 0.6: 0.5 is a poor cut
    names = ["a", "b", "c", "d"]
    tuned = evaluate_multilabel(y_test, s_test, names, tune_thresholds(y_val, s_val))
    fixed = evaluate_multilabel(y_test, s_test, names, 0.5)
    assert tuned.macro_f1 > fixed.macro_f1 + 0.1


# -- quality gate ---------------------------------------------------------------------------------
def _report(accuracy: float, macro_f1: float, latency: float | None = None) -> EvaluationReport:
    return EvaluationReport(
        class_names=["a"], n_images=10, accuracy=accuracy, macro_f1=macro_f1, confusion=[[10]], latency_p50_ms=latency
    )


def test_gate_checks_each_threshold_with_value_and_comparison():
    config = GateConfig(min_accuracy=0.9, min_macro_f1=0.85, max_latency_p50_ms=20)
    ok = quality_gate(_report(0.95, 0.9, 12.5), config)
    assert ok.passed and [c.name for c in ok.checks] == ["test_accuracy", "test_macro_f1", "latency_p50_ms"]
    assert ok.checks[2] == GateCheck(
        name="latency_p50_ms",
        value=12.5,
        threshold=20.0,
        comparison="<=",
        passed=True,
        message="latency_p50_ms 12.5000 <= 20.0 [ok]",
    )
    for report, failing in [
        (_report(0.85, 0.9, 12.5), "test_accuracy"),
        (_report(0.95, 0.8, 12.5), "test_macro_f1"),
        (_report(0.95, 0.9, 25.0), "latency_p50_ms"),
    ]:
        result = quality_gate(report, config)
        assert not result.passed and [c.name for c in result.failed_checks] == [failing]
    slow = quality_gate(_report(0.95, 0.9, 25.0), config)
    assert "latency_p50_ms 25.0000 > 20.0 [FAIL]" in slow.explain()
    assert "test_accuracy 0.9500 >= 0.9 [ok]" in slow.explain()


def test_gate_fails_loudly_when_latency_was_not_measured():
    config = GateConfig(min_accuracy=0.5, max_latency_p50_ms=20)
    result = quality_gate(_report(0.95, 0.9, None), config)
    assert not result.passed and result.failed_checks[0].value is None
    assert "latency_p50_ms was not measured (required <= 20.0)" in result.explain()
    # a LatencyReport passed in directly is used
    measured = LatencyReport(p50_ms=5.0, p95_ms=6.0, batch32_images_per_s=1000.0)
    assert quality_gate(_report(0.95, 0.9, None), config, latency=measured).passed
    # NaN accuracy (e.g. a broken evaluation) never passes
    assert not quality_gate(_report(float("nan"), 0.9), GateConfig(min_accuracy=0.0)).passed
    # latency is not gated unless configured
    assert [c.name for c in quality_gate(_report(0.95, 0.9), GateConfig()).checks] == ["test_accuracy", "test_macro_f1"]


def test_gate_config_rejects_unknown_keys_and_bad_values():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="max_latency_ms"):
        GateConfig(max_latency_ms=5)
    with pytest.raises(ValidationError):
        GateConfig(min_macro_f1=1.5)
    with pytest.raises(ValidationError):
        GateConfig(max_latency_p50_ms=0)


# -- latency --------------------------------------------------------------------------------------
def test_latency_report_structure_on_a_tiny_torch_model():
    import torch

    from imgclf.preprocess import PreprocessSpec

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3)
    )
    report = measure_model_latency(model, PreprocessSpec(image_size=16), warmup=1, repeats=10)
    assert report.p95_ms >= report.p50_ms > 0 and report.batch32_images_per_s > 0
    assert report.batch_size == 32 and report.repeats == 10 and "torch cpu" in report.machine
    assert set(report.metrics()) == {"latency_p50_ms", "latency_p95_ms", "batch32_images_per_s"}


def test_measure_latency_calls_the_runner_as_asked():
    calls = []
    report = measure_latency(
        lambda x: calls.append(len(x)), np.zeros((1, 2)), np.zeros((8, 2)), warmup=2, repeats=6, batch_repeats=3
    )
    assert calls == [1] * 8 + [8] * 5  # warm-up + timed, batch 1 then the throughput batch
    assert report.batch_size == 8 and report.p95_ms >= report.p50_ms >= 0
    with pytest.raises(ValueError, match="batch of 1"):
        measure_latency(lambda x: None, np.zeros((2, 2)), np.zeros((8, 2)))
