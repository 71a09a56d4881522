"""One image's logits -> the answer a client gets (without `model_version`, which the caller adds).

Single-label models: softmax, the top-1 `label` and its `confidence`, and the `top_k`. Multi-label
models (thresholds in the ONNX metadata): a sigmoid score per label, `labels` = every label whose
score reaches its threshold (highest score first), `scores` for all labels, and `label`,
`confidence`, `top_k` by score as for a single-label model, so a client reading only those still
works. The scores are `imgclf.scores`' (the sigmoid that tuned the thresholds). Pure numpy: the
batched and the single-image paths of the service give the same answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from imgclf.scores import probabilities


def answer(
    logits_row: np.ndarray, class_names: Sequence[str], top_k: int, thresholds: Sequence[float] | None = None
) -> dict:
    """The answer for one image's logits (C,). `thresholds` (one per class, on sigmoid scores) make it
    a multi-label answer; None: single-label. `top_k` is clamped to 1..C."""
    logits = np.asarray(logits_row, dtype=np.float64)
    if logits.shape != (len(class_names),):
        raise ValueError(f"expected {len(class_names)} logits (one per class), got shape {logits.shape}")
    return scored_answer(probabilities(logits, multi_label=thresholds is not None), class_names, top_k, thresholds)


def scored_answer(
    scores_row: np.ndarray, class_names: Sequence[str], top_k: int, thresholds: Sequence[float] | None = None
) -> dict:
    """As `answer`, from the image's scores (C,) already computed (`imgclf.scores.probabilities` of its
    logits: the service computes them once per batch, for the answers and the prediction log)."""
    scores = np.asarray(scores_row, dtype=np.float64)
    if scores.shape != (len(class_names),):
        raise ValueError(f"expected {len(class_names)} scores (one per class), got shape {scores.shape}")
    if thresholds is not None and len(thresholds) != len(class_names):
        raise ValueError(f"expected {len(class_names)} thresholds (one per class), got {len(thresholds)}")
    order = np.argsort(-scores, kind="stable")
    top = [{"label": class_names[i], "confidence": float(scores[i])} for i in order[: max(1, min(top_k, len(order)))]]
    single = {"label": top[0]["label"], "confidence": top[0]["confidence"], "top_k": top}
    if thresholds is None:
        return single
    return {
        "labels": [class_names[i] for i in order if scores[i] >= thresholds[i]],
        "scores": {name: float(s) for name, s in zip(class_names, scores)},
        **single,
    }
