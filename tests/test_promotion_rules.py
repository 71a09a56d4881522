"""The promotion rules on real comparisons (paired bootstrap + McNemar on synthetic predictions)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from imgclf.evaluate.comparison import compare_models
from imgclf.promotion.rules import PromotionRules, decide

RNG = np.random.default_rng(0)
Y = RNG.integers(0, 10, 400)


def predictions(accuracy: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(Y)) > accuracy
    return np.where(wrong, (Y + 1 + rng.integers(0, 9, len(Y))) % 10, Y)


GOOD, SAME, BAD = predictions(0.95, 1), predictions(0.95, 2), predictions(0.30, 3)
CHAMPION = "models:/m/1 (@staging)"


def test_a_significantly_worse_candidate_is_refused_and_a_comparable_one_taken():
    worse = compare_models(Y, GOOD, BAD, n_classes=10)
    refused = decide(PromotionRules(), "staging", True, "ok", worse, CHAMPION)
    assert (
        not refused.allowed
        and refused.reason == f"refused staging: significantly worse than {CHAMPION} (challenger worse)"
    )
    same = compare_models(Y, GOOD, SAME, n_classes=10)
    taken = decide(PromotionRules(), "staging", True, "ok", same, CHAMPION)
    assert taken.allowed and "no significant difference" in taken.reason
    strict = decide(PromotionRules(require="better"), "production", True, "ok", same, CHAMPION)
    assert not strict.allowed and "not significantly better" in strict.reason
    better = compare_models(Y, BAD, GOOD, n_classes=10)
    assert decide(PromotionRules(require="better"), "production", True, "ok", better, CHAMPION).allowed


def test_the_gate_and_an_incomparable_champion_refuse_unless_told_otherwise():
    gate_failed = decide(PromotionRules(), "staging", False, "test_accuracy 0.5 < 0.9 [FAIL]", None, "")
    assert not gate_failed.allowed and "quality gate failed (test_accuracy 0.5 < 0.9 [FAIL])" in gate_failed.reason
    assert "was not recorded" in decide(PromotionRules(), "staging", None, "", None, "").reason
    assert decide(PromotionRules(require_gate=False), "staging", False, "", None, "").allowed
    assert decide(PromotionRules(), "staging", True, "ok", None, "").allowed  # nothing holds it
    incomparable = decide(PromotionRules(), "staging", True, "ok", None, CHAMPION)
    assert not incomparable.allowed and "could not be compared" in incomparable.reason
    assert decide(PromotionRules(allow_incomparable=True), "staging", True, "ok", None, CHAMPION).allowed


def test_a_misspelled_rule_is_an_error_that_names_it():
    with pytest.raises(ValidationError, match="requires"):
        PromotionRules(requires="better")
