"""The evaluation's figures, each returned as PNG bytes (the HTML report embeds them as base64 with
`png_data_uri`; MLflow and the dashboard take the bytes as they are).

Drawn on `matplotlib.figure.Figure` with the Agg canvas directly: pyplot is never imported, so no
global figure state, no backend switching and no GUI, whatever else runs in the process. Every
function copes with empty input by returning a small PNG that says what is missing. Numpy and
matplotlib only (torch is not imported here). The selections behind two of the figures,
`top_misclassified` and `confused_pairs`, are public so that a report can list them as tables too.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from io import BytesIO

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
_ARROW = "\u2192"  # →, in matplotlib's bundled DejaVu Sans


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)  # attach the Agg canvas: rendering never goes through pyplot's backend
    return fig


def _png(fig: Figure) -> bytes:
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.1)
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    """`data:image/png;base64,...` for an <img src=...> in a self-contained HTML report."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def message_png(message: str, title: str | None = None) -> bytes:
    """A small figure that only says `message` (what every plot returns when it has nothing to draw)."""
    fig = _figure(4.8, 1.2)
    if title:
        fig.suptitle(title, fontsize=10, fontweight="bold")
    fig.text(0.5, 0.45, message, ha="center", va="center", fontsize=9, wrap=True)
    return _png(fig)


def _short(name: object, limit: int = 16) -> str:
    text = str(name)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _name(class_names: Sequence[str], index: int) -> str:
    return _short(class_names[index]) if 0 <= index < len(class_names) else str(index)


def _show(ax, image: np.ndarray) -> None:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def top_misclassified(
    y_true: Sequence[int], y_pred: Sequence[int], confidences: Sequence[float], max_items: int = 16
) -> np.ndarray:
    """Indices of the misclassified images, most confident first (ties keep data order), at most `max_items`."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    confidences = np.asarray(confidences, dtype=np.float64)
    if not len(y_true) == len(y_pred) == len(confidences):
        raise ValueError(f"{len(y_true)} labels, {len(y_pred)} predictions, {len(confidences)} confidences")
    wrong = np.flatnonzero(y_true != y_pred)
    return wrong[np.argsort(-np.nan_to_num(confidences[wrong], nan=-1.0), kind="stable")][: max(max_items, 0)]


def confused_pairs(confusion: np.ndarray | Sequence[Sequence[int]], top: int = 10) -> list[tuple[int, int, int]]:
    """The `top` most frequent off-diagonal cells of a confusion matrix (rows = true class) as
    (true index, predicted index, count), largest first; cells with count 0 are left out."""
    cm = np.asarray(confusion, dtype=np.int64)
    if cm.size == 0:
        return []
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"expected a square confusion matrix, got shape {cm.shape}")
    off = cm.copy()
    np.fill_diagonal(off, 0)
    cells = sorted(
        ((int(off[t, p]), int(t), int(p)) for t, p in zip(*np.nonzero(off))), key=lambda c: (-c[0], c[1], c[2])
    )
    return [(t, p, count) for count, t, p in cells[: max(top, 0)]]


def misclassified_grid(
    images: np.ndarray | Sequence[np.ndarray],
    y_true: Sequence[int],
    y_pred: Sequence[int],
    confidences: Sequence[float],
    class_names: Sequence[str],
    max_items: int = 16,
) -> bytes:
    """The misclassified images the model was most sure about, most confident first, each titled
    `true → pred (confidence)`. `confidences` is the probability of the predicted class."""
    if len(images) != len(y_true):
        raise ValueError(f"misclassified_grid: {len(images)} images for {len(y_true)} labels")
    order = top_misclassified(y_true, y_pred, confidences, max_items)
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    confidences = np.asarray(confidences, dtype=np.float64)
    n_wrong = int((y_true != y_pred).sum())
    title = "Most confident mistakes"
    if len(y_true) == 0:
        return message_png("No test images to show.", title)
    if n_wrong == 0:
        return message_png(f"No misclassified images: all {len(y_true)} test images were classified correctly.", title)
    if len(order) == 0:
        return message_png(f"{n_wrong} misclassified images (none asked for).", title)
    cols = min(4, len(order))
    rows = math.ceil(len(order) / cols)
    fig = _figure(2.3 * cols, 2.5 * rows + 0.4)
    fig.suptitle(f"{title}: {len(order)} of {n_wrong} misclassified (of {len(y_true)})", fontsize=10, fontweight="bold")
    for slot, i in enumerate(order):
        ax = fig.add_subplot(rows, cols, slot + 1)
        _show(ax, images[i])
        ax.set_title(
            f"{_name(class_names, y_true[i])} {_ARROW} {_name(class_names, y_pred[i])} ({confidences[i]:.2f})",
            fontsize=8,
        )
    return _png(fig)


def confused_pairs_chart(
    confusion: np.ndarray | Sequence[Sequence[int]], class_names: Sequence[str], top: int = 10
) -> bytes:
    """Horizontal bars of the `top` most frequent (true → predicted) confusions, from a confusion
    matrix with true classes as rows; each bar says its count and its share of the true class."""
    cm = np.asarray(confusion, dtype=np.int64)
    title = "Most-confused class pairs"
    pairs = [(count, t, p) for t, p, count in confused_pairs(cm, top)]
    if not pairs:
        return message_png("No confusions: no test image was given a wrong class.", title)
    support = cm.sum(axis=1)
    labels = [f"{_name(class_names, t)} {_ARROW} {_name(class_names, p)}" for _, t, p in pairs]
    counts = [c for c, _, _ in pairs]
    fig = _figure(6.0, 0.9 + 0.32 * len(pairs))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(pairs))
    ax.barh(y, counts, color="#d9534f")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()  # the most frequent on top
    for yi, (count, t, _) in zip(y, pairs):
        ax.text(
            count,
            yi,
            f" {count} ({count / support[t]:.0%} of true)" if support[t] else f" {count}",
            va="center",
            fontsize=7,
        )
    ax.set_xlim(0, max(counts) * 1.35)
    ax.set_xlabel("test images (true class → predicted class)")
    ax.set_title(title, fontsize=10, fontweight="bold")
    ax.xaxis.get_major_locator().set_params(integer=True)
    return _png(fig)


def per_class_accuracy_chart(per_class_accuracy: Mapping[str, float], max_classes: int = 60) -> bytes:
    """Horizontal bars of each class's accuracy (recall) in class order, the macro mean as a line;
    a class with no test images shows as n/a. Over `max_classes` classes, the lowest ones are shown."""
    title = "Per-class accuracy"
    items = [(str(k), float(v) if v is not None else math.nan) for k, v in per_class_accuracy.items()]
    if not items:
        return message_png("No classes to show.", title)
    if len(items) > max_classes:
        items = sorted(items, key=lambda kv: kv[1] if not math.isnan(kv[1]) else 2.0)[:max_classes]
        title += f" (lowest {max_classes} of {len(per_class_accuracy)})"
    names = [_short(k, 20) for k, _ in items]
    values = np.array([v for _, v in items])
    known = ~np.isnan(values)
    from matplotlib import colormaps

    colours = colormaps["RdYlGn"](np.clip(np.nan_to_num(values), 0, 1) * 0.8 + 0.1)
    fig = _figure(6.0, 0.9 + 0.26 * len(items))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(items))
    ax.barh(y, np.where(known, values, 0.0), color=colours)
    for yi, value in zip(y, values):
        ax.text(
            value if not math.isnan(value) else 0.0,
            yi,
            f" {value:.2f}" if not math.isnan(value) else " n/a (no test images)",
            va="center",
            fontsize=7,
        )
    if known.any():
        mean = float(values[known].mean())
        ax.axvline(mean, color="#333333", linestyle="--", linewidth=1)
        ax.text(mean, -0.8, f"mean {mean:.3f}", ha="center", va="bottom", fontsize=7)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.15)
    ax.set_ylim(len(items) - 0.5, -1.3)
    ax.set_xlabel("accuracy (share of the class's test images predicted correctly)")
    ax.set_title(title, fontsize=10, fontweight="bold")
    return _png(fig)


def _calibration_bars(ax, centres: np.ndarray, widths: np.ndarray, conf: np.ndarray, acc: np.ndarray) -> None:
    """Accuracy bars of the non-empty bins, the gap to their mean confidence, and the diagonal."""
    ax.bar(
        centres,
        acc,
        width=widths,
        color="#4a7ebb",
        edgecolor="#1f3f66",
        linewidth=0.6,
        label="accuracy",
    )
    gap_low = np.minimum(acc, conf)
    ax.bar(
        centres,
        np.abs(conf - acc),
        bottom=gap_low,
        width=widths,
        color="#d9534f",
        alpha=0.35,
        edgecolor="#d9534f",
        hatch="//",
        linewidth=0.6,
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="#555555", linewidth=1, label="perfect calibration")
    ax.plot(conf, acc, "o", color="#1f3f66", markersize=3)


def reliability_diagram(
    bin_confidence: Sequence[float],
    bin_accuracy: Sequence[float],
    bin_counts: Sequence[int],
    ece: float,
    bin_edges: Sequence[float] | None = None,
) -> bytes:
    """Calibration: per confidence bin, the accuracy (bars) against the mean confidence (red gap to
    it), the diagonal of perfect calibration, and below it how many test images fell in each bin.
    Bins are equal-width over [0, 1] unless `bin_edges` (len + 1 values) says otherwise; empty bins
    (count 0, confidence/accuracy may be NaN) are left blank."""
    conf = np.asarray(bin_confidence, dtype=np.float64)
    acc = np.asarray(bin_accuracy, dtype=np.float64)
    counts = np.asarray(bin_counts, dtype=np.float64)
    title = "Reliability diagram"
    if not len(conf) == len(acc) == len(counts):
        raise ValueError(f"reliability_diagram: {len(conf)} confidences, {len(acc)} accuracies, {len(counts)} counts")
    if len(counts) == 0 or np.nansum(counts) <= 0:
        return message_png("No predictions to bin: nothing to calibrate.", title)
    edges = np.linspace(0.0, 1.0, len(counts) + 1) if bin_edges is None else np.asarray(bin_edges, dtype=np.float64)
    if len(edges) != len(counts) + 1:
        raise ValueError(f"reliability_diagram: {len(edges)} bin edges for {len(counts)} bins")
    centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    used = (counts > 0) & ~np.isnan(conf) & ~np.isnan(acc)
    fig = _figure(5.0, 5.6)
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.08)
    ax = fig.add_subplot(grid[0])
    _calibration_bars(ax, centres[used], widths[used], conf[used], acc[used])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.tick_params(labelbottom=False)
    ece_text = f"{ece:.4f}" if ece is not None and not math.isnan(ece) else "n/a"
    ax.set_title(f"{title} (ECE = {ece_text})", fontsize=10, fontweight="bold")
    ax.legend(loc="upper left", fontsize=7)
    ax_n = fig.add_subplot(grid[1], sharex=ax)
    ax_n.bar(centres, counts, width=widths, color="#888888", edgecolor="#444444", linewidth=0.5)
    ax_n.set_xlabel("confidence (probability of the predicted class)")
    ax_n.set_ylabel("images")
    return _png(fig)


def gradcam_grid(
    images: np.ndarray | Sequence[np.ndarray],
    heatmaps: np.ndarray | Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    max_items: int = 16,
    alpha: float = 0.45,
    heading: str = "Grad-CAM",
) -> bytes:
    """Each image beside its Grad-CAM overlay, under its title (e.g. `true → pred (0.93)`)."""
    from imgclf.evaluate.gradcam import overlay  # only this figure needs it (and gradcam needs torch)

    if len(images) != len(heatmaps) or (titles is not None and len(titles) != len(images)):
        n_titles = len(titles) if titles is not None else "no"
        raise ValueError(f"gradcam_grid: {len(images)} images, {len(heatmaps)} heatmaps, {n_titles} titles")
    n = min(len(images), max(max_items, 0))
    if n == 0:
        return message_png("No images to explain.", heading)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = _figure(3.7 * cols, 2.0 * rows + 0.3)
    fig.suptitle(heading, fontsize=10, fontweight="bold")
    # per item: image | overlay, then a narrow spacer column between items
    grid = fig.add_gridspec(rows, 3 * cols - 1, width_ratios=([1, 1, 0.15] * cols)[:-1], wspace=0.04, hspace=0.35)
    for i in range(n):
        r, c = divmod(i, cols)
        image = np.asarray(images[i])
        rgb = (
            image
            if image.ndim == 3 and image.shape[-1] == 3
            else np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1)
        )
        left, right = fig.add_subplot(grid[r, 3 * c]), fig.add_subplot(grid[r, 3 * c + 1])
        _show(left, rgb)
        _show(right, overlay(rgb, np.asarray(heatmaps[i]), alpha=alpha))
        if titles is not None:
            left.set_title(_short(titles[i], 48), loc="left", fontsize=8)
    return _png(fig)
