"""The queue for a labeller: a CSV to fill in (its empty `label` column), or Label Studio tasks with the
model's answer as a pre-annotation (labelling config: an `Image` named "image" and `Choices` named
"label" on it; see README, "Active-learning queue")."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from imgclf.labelling.records import QueueItem

CSV_COLUMNS = (
    "sha256", "file", "label", "predicted", "confidence", "margin", "entropy", "top_k", "model_version",
    "queued_at", "width", "height",
)  # fmt: skip
LOCAL_FILES = "/data/local-files/?d="  # Label Studio's local-files storage; paths relative to its document root
FROM_NAME, TO_NAME = "label", "image"


def write_csv(items: Sequence[QueueItem], image_path: Callable[[QueueItem], Path], path: str | Path) -> int:
    """One row per item; `label` is left empty for the labeller. Returns the rows written."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for item in items:
            writer.writerow(
                {
                    "sha256": item.sha256,
                    "file": str(image_path(item).resolve()),
                    "label": "",
                    "predicted": item.predicted,
                    "confidence": f"{item.confidence:.4f}",
                    "margin": f"{item.margin:.4f}",
                    "entropy": f"{item.entropy:.4f}",
                    "top_k": "|".join(f"{label}:{score:.4f}" for label, score in item.top_k),
                    "model_version": item.model_version,
                    "queued_at": item.queued_iso,
                    "width": item.width,
                    "height": item.height,
                }
            )
    return len(items)


def label_studio_task(item: QueueItem, url: str) -> dict:
    """One task: the image URL, the item's sha256 (how an export finds its way back), the prediction."""
    return {
        "data": {
            TO_NAME: url,
            "sha256": item.sha256,
            "predicted": item.predicted,
            "model_version": item.model_version,
            "queued_at": item.queued_iso,
        },
        "predictions": [
            {
                "model_version": item.model_version,
                "score": item.confidence,
                "result": [
                    {
                        "from_name": FROM_NAME,
                        "to_name": TO_NAME,
                        "type": "choices",
                        "value": {"choices": [item.predicted]},
                    }
                ],
            }
        ],
    }


def write_label_studio(items: Sequence[QueueItem], url_prefix: str, path: str | Path) -> int:
    """Label Studio's JSON import format, a list of tasks; image URLs are `url_prefix` + the PNG's path
    relative to the queue folder (serve the folder as Label Studio's local-files document root, or give
    the prefix of wherever it is served)."""
    tasks = [label_studio_task(item, f"{url_prefix}images/{item.file_name}") for item in items]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(tasks, indent=1), encoding="utf-8")
    return len(tasks)
