"""imgclf.scores: the one softmax and sigmoid every layer uses (training, evaluation, drift, the service)."""

from __future__ import annotations

import ast
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from imgclf.scores import probabilities, sigmoid, softmax

ROOT = Path(__file__).resolve().parents[1]


def test_softmax_of_a_row_and_of_a_batch():
    row = softmax(np.log([1.0, 4.0, 2.0]))
    assert row.dtype == np.float64 and row == pytest.approx([1 / 7, 4 / 7, 2 / 7])
    batch = np.random.default_rng(0).normal(scale=5.0, size=(64, 10)).astype(np.float32)
    probs = softmax(batch)
    assert probs.shape == (64, 10) and np.allclose(probs.sum(axis=1), 1.0)
    assert (probs.argmax(axis=1) == batch.argmax(axis=1)).all()
    # the service answers a batch; one image alone must get the very same numbers
    assert all(np.array_equal(probs[i], softmax(batch[i])) for i in range(len(batch)))


def test_softmax_is_bit_identical_to_the_formula_it_replaced():
    """The copies it replaced (evaluation's row-wise one, the service's one-row one) subtracted the max
    in float64, exponentiated and divided by the sum: the stored numbers must not move."""
    logits = np.random.default_rng(1).normal(scale=3.0, size=(50, 7)).astype(np.float32)
    z = logits.astype(np.float64)
    old = np.exp(z - z.max(axis=1, keepdims=True))
    old = old / old.sum(axis=1, keepdims=True)
    assert np.array_equal(softmax(logits), old)
    one = np.exp(z[3] - z[3].max())
    assert np.array_equal(softmax(logits[3]), one / one.sum())


def test_extreme_logits_neither_overflow_nor_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert softmax(np.array([1000.0, -1000.0, 0.0])).tolist() == [1.0, 0.0, 0.0]
        assert sigmoid(np.array([1000.0, -1000.0], dtype=np.float32)).tolist() == [1.0, 0.0]


def test_sigmoid_is_the_logistic_function_elementwise():
    z = np.array([[-3.0, 0.0, 0.5], [2.0, -1.0, 7.0]])
    assert sigmoid(z) == pytest.approx(np.vectorize(lambda v: 1 / (1 + math.exp(-v)))(z))
    assert sigmoid(z).shape == z.shape and sigmoid(0.0) == 0.5


def test_probabilities_chooses_sigmoid_for_multi_label_and_softmax_otherwise():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    single, multi = probabilities(logits, multi_label=False), probabilities(logits, multi_label=True)
    assert np.array_equal(single, softmax(logits)) and np.allclose(single.sum(axis=1), 1.0)
    assert np.array_equal(multi, sigmoid(logits)) and multi[1].tolist() == [0.5, 0.5, 0.5]
    assert np.array_equal(probabilities(logits[0], multi_label=False), single[0])


def test_softmax_refuses_logits_without_classes():
    with pytest.raises(ValueError, match="at least one class"):
        softmax(np.float64(1.0))
    with pytest.raises(ValueError, match="at least one class"):
        softmax(np.zeros((3, 0)))


def test_no_other_module_defines_a_softmax_or_a_sigmoid():
    """One definition: a second copy would drift from the one that tuned the thresholds."""
    copies = []
    for path in sorted((ROOT / "imgclf").rglob("*.py")):
        if path == ROOT / "imgclf" / "scores.py":
            continue
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            name = node.name.lower() if isinstance(node, ast.FunctionDef) else ""
            if "softmax" in name or "sigmoid" in name or name.lstrip("_") == "probabilities":
                copies.append(f"{path.relative_to(ROOT)}: def {name}")
        if "np.tanh(0.5" in source or "np.exp(logits" in source:
            copies.append(f"{path.relative_to(ROOT)}: an inline softmax or sigmoid")
    assert copies == []
