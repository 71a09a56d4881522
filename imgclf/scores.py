"""Logits -> scores, written once: softmax for a single-label model, sigmoid for a multi-label one.

Training tunes thresholds on these sigmoid scores, evaluation judges these softmax outputs, the drift
reference and the service compute the same numbers, so every one of them imports this module (numpy
only, the lowest layer: the service may import it without reaching torch).
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in float64: one row (C,) or a batch (N, C). The maximum is subtracted
    first, so large logits cannot overflow."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 0 or z.shape[-1] == 0:
        raise ValueError(f"softmax needs logits with at least one class on the last axis, got shape {z.shape}")
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise sigmoid in float64 (the tanh form cannot overflow)."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, dtype=np.float64)))


def probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """A model's scores from its logits, a row (C,) or a batch (N, C): sigmoid per label for a multi-label
    model, else softmax over the classes."""
    return sigmoid(logits) if multi_label else softmax(logits)
