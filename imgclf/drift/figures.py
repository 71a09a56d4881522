"""Time series of a window of served traffic (latency, confidence, the predicted-class mix), as one HTML
page with the figures inline, beside Evidently's drift report."""

from __future__ import annotations

import base64
import html
import io

import pandas as pd

from imgclf.drift.detect import DriftDecision


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def traffic_figures(window: pd.DataFrame, buckets: int = 20) -> list[tuple[str, str]]:
    """[(title, base64 PNG)]: median and p95 latency, mean confidence, class shares over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = window.sort_values("time").reset_index(drop=True)
    frame["bucket"] = (frame.index * buckets // max(1, len(frame))).astype(int)
    grouped = frame.groupby("bucket")
    when = grouped["time"].min()
    out = []
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.plot(when, grouped["latency_ms"].median(), label="p50")
    ax.plot(when, grouped["latency_ms"].quantile(0.95), label="p95")
    ax.set_ylabel("latency ms")
    ax.legend()
    out.append(("Latency", _png(fig)))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.plot(when, grouped["confidence"].mean(), label="mean confidence")
    ax.plot(when, grouped["margin"].mean(), label="mean margin")
    ax.set_ylim(0, 1)
    ax.legend()
    out.append(("Confidence", _png(fig)))
    plt.close(fig)
    shares = pd.crosstab(frame["bucket"], frame["label"].astype(str), normalize="index")
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.stackplot(when, shares.T.to_numpy(), labels=list(shares.columns))
    ax.set_ylabel("share of answers")
    ax.legend(fontsize=6, ncol=min(10, len(shares.columns)), loc="upper left", bbox_to_anchor=(0, -0.15))
    out.append(("Predicted classes", _png(fig)))
    plt.close(fig)
    return out


def traffic_page(window: pd.DataFrame, decision: DriftDecision, version: str) -> str:
    """The decision in words, each signal's score, and the figures: a self-contained HTML page."""
    rows = "".join(
        f"<tr><td>{html.escape(s.signal)}</td><td>{'drifted' if s.drifted else 'no'}</td>"
        f"<td>{s.score:.4g}</td><td>{s.threshold:.4g}</td></tr>"
        for s in decision.signals
    )
    figures = (
        ""
        if window.empty
        else "".join(
            f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"
            for title, data in traffic_figures(window)
        )
    )
    return (
        f"<html><body style='font-family:sans-serif'><h2>Traffic of version {html.escape(version)}</h2>"
        f"<p>{html.escape(decision.summary())}</p><table border=1 cellpadding=4>"
        "<tr><th>signal</th><th>drift</th><th>score</th><th>threshold</th></tr>"
        f"{rows}</table>{figures}</body></html>"
    )
