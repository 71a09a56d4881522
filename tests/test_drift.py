"""Drift decisions on prediction-log shaped windows: Evidently computes, the decision names the signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from imgclf.drift.detect import DriftConfig, detect_drift


def frame(n: int, seed: int, brightness: float = 0.5, classes=(0.1,) * 10, embed_shift: float = 0.0) -> pd.DataFrame:
    """A window as the prediction log holds it: statistics, prediction figures, label, embedding."""
    rng = np.random.default_rng(seed)
    p = np.asarray(classes) / np.sum(classes)
    data = {
        "brightness": rng.normal(brightness, 0.08, n),
        "contrast": rng.normal(0.3, 0.05, n),
        "saturation": rng.normal(0.0, 0.01, n),
        "sharpness": rng.gamma(2.0, 0.02, n),
        "entropy": rng.normal(3.0, 0.3, n),
        "clipped": rng.beta(2, 8, n),
        "confidence": rng.beta(8, 1, n),
        "margin": rng.beta(6, 2, n),
        "pred_entropy": rng.gamma(1.0, 0.2, n),
        "label": [str(c) for c in rng.choice(10, n, p=p)],
    }
    vectors = rng.normal(0.0, 1.0, (n, 8))
    vectors[:, 0] += embed_shift
    data["embedding"] = list(vectors.astype(np.float32))
    return pd.DataFrame(data)


REFERENCE = frame(400, seed=0)


def test_too_few_rows_is_not_enough_data_rather_than_a_guess():
    decision, snapshot = detect_drift(frame(50, seed=1), REFERENCE, DriftConfig(min_rows=200))
    assert not decision.enough_data and not decision.drifted and snapshot is None
    assert "the window has 50 rows; at least 200" in decision.summary()


def test_traffic_like_the_reference_is_not_drift():
    for seed in (1, 2, 3):
        decision, _ = detect_drift(frame(300, seed=seed), REFERENCE)
        assert decision.enough_data and not decision.drifted, decision.summary()
        assert {s.signal for s in decision.signals} == {
            "image_statistics",
            "prediction",
            "predicted_class",
            "embedding",
        }


def test_darker_images_drift_on_image_statistics_only():
    decision, snapshot = detect_drift(frame(300, seed=4, brightness=0.35), REFERENCE)
    assert decision.drifted and decision.drifted_signals == ["image_statistics"]
    stats = next(s for s in decision.signals if s.signal == "image_statistics")
    assert stats.columns["brightness"] < stats.threshold < stats.columns["contrast"]
    assert snapshot is not None


def test_a_shifted_class_mix_drifts_on_the_predicted_class():
    skewed = (0.5,) + (0.5 / 9,) * 9
    decision, _ = detect_drift(frame(300, seed=5, classes=skewed), REFERENCE)
    assert decision.drifted_signals == ["predicted_class"]


def test_embedding_drift_is_deterministic_and_held_to_its_threshold():
    window = frame(300, seed=6, embed_shift=1.0)
    first, _ = detect_drift(window, REFERENCE)
    again, _ = detect_drift(window, REFERENCE)
    assert first.drifted_signals == ["embedding"] == again.drifted_signals
    auc = next(s for s in first.signals if s.signal == "embedding")
    assert auc.score == next(s for s in again.signals if s.signal == "embedding").score > auc.threshold


def test_windows_without_embeddings_are_judged_on_the_other_signals():
    window = frame(300, seed=7).assign(embedding=None)
    decision, _ = detect_drift(window, REFERENCE)
    assert decision.enough_data and "embedding" not in {s.signal for s in decision.signals}


def test_the_report_renders_to_html(tmp_path):
    _, snapshot = detect_drift(frame(300, seed=8, brightness=0.35), REFERENCE)
    out = tmp_path / "drift.html"
    snapshot.save_html(str(out))
    assert out.stat().st_size > 10_000 and "brightness" in out.read_text(errors="replace")


def test_a_config_naming_an_unknown_signal_is_refused():
    with pytest.raises(ValueError, match="signals must be a non-empty subset"):
        DriftConfig(signals=("image_statistics", "vibes"))
    with pytest.raises(ValueError, match="extra"):
        DriftConfig(window=5)


def test_the_reference_profile_is_what_the_service_would_log_for_the_held_out_images(
    servable_bundle, small_model, tmp_path
):
    import shutil

    from imgclf.drift.reference import read_reference_profile, write_reference_profile
    from imgclf.serving.predictor import Predictor

    _, manifest = small_model
    test = manifest.subset("test").records
    images = [Path(manifest.root) / p for p in test["path"]]
    bundle = tmp_path / "bundle"
    shutil.copytree(servable_bundle, bundle)
    assert read_reference_profile(bundle) is None
    write_reference_profile(bundle, images)
    profile = read_reference_profile(bundle)
    assert len(profile) == len(images)
    predictor = Predictor.from_path(bundle)
    served = [predictor.predict(p.read_bytes()) for p in images[:5]]
    assert list(profile["label"][:5]) == [a["label"] for a in served]
    assert np.allclose(profile["confidence"][:5], [a["confidence"] for a in served], atol=1e-5)
    accuracy = (profile["label"].astype(str) == test["label"].astype(str).to_numpy()).mean()
    assert accuracy > 0.9 and profile["brightness"].between(0, 1).all() and (profile["margin"] >= 0).all()
    decision, _ = detect_drift(profile, profile, DriftConfig(min_rows=20))
    assert decision.enough_data and not decision.drifted, "a profile never drifts from itself"


@pytest.mark.parametrize("name", ["monitoring.yaml", "monitoring_schedule.yaml"])
def test_the_shipped_monitoring_configs_are_valid(name):
    import yaml

    from conftest import ROOT
    from imgclf.drift.monitor import MonitoringConfig

    config = yaml.safe_load((ROOT / "configs" / name).read_text())
    watched = MonitoringConfig(**config["steps"]["watch_traffic"]["parameters"]["config"])
    judged = MonitoringConfig(**config["steps"]["judge_drift"]["parameters"]["config"])
    assert watched == judged and watched.drift.alpha == 0.01


def test_a_window_is_chosen_by_rows_or_by_hours_not_both():
    from imgclf.drift.monitor import MonitoringConfig

    assert MonitoringConfig(last=None, hours=24).hours == 24
    with pytest.raises(ValueError, match="`last` \\(rows\\) or by `hours`"):
        MonitoringConfig(last=100, hours=24)
