"""Labels back from a person -> images in the data folder, each with a provenance record, ready for
`dvc add`. Reads the queue's own CSV (its `label` column filled in) and Label Studio's JSON exports
(full, or JSON-MIN). Everything is checked before anything is copied: one bad row imports nothing."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from imgclf.labelling.exports import FROM_NAME
from imgclf.labelling.records import SOURCE, QueueError, QueueItem, check_sha256, iso

PROVENANCE = ".provenance"  # data_folder/.provenance/<label>/<file>.json (hidden: not ingested as an image)
MAX_LABEL_CHARS = 100


@dataclass(frozen=True)
class Label:
    sha256: str
    label: str
    labelled_by: str = ""
    labelled_at: str = ""  # ISO time, "" when the source does not say


@dataclass
class ImportReport:
    imported: list[Path] = field(default_factory=list)  # the images written into the data folder
    unlabelled: int = 0  # rows or tasks without a label yet (left in the queue)


def read_labels(path: str | Path, labelled_by: str = "") -> tuple[list[Label], int]:
    """The labels in a CSV or a Label Studio JSON export, and how many rows had none yet."""
    path = Path(path)
    if not path.is_file():
        raise QueueError(f"labels file not found: {path}")
    try:
        rows = _csv_labels(path, labelled_by) if path.suffix.lower() == ".csv" else _studio_labels(path, labelled_by)
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as exc:
        raise QueueError(f"{path} cannot be parsed: {exc}") from None
    found = [label for label in rows if label is not None]
    by_sha: dict[str, Label] = {}
    for label in found:
        if label.sha256 in by_sha and by_sha[label.sha256].label != label.label:
            raise QueueError(
                f"{path}: item {label.sha256} has two labels ({by_sha[label.sha256].label!r}, {label.label!r})"
            )
        by_sha[label.sha256] = label
    return list(by_sha.values()), len(rows) - len(found)


def _csv_labels(path: Path, labelled_by: str) -> list[Label | None]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or [])
        if "label" not in columns or not columns & {"sha256", "file"}:
            raise QueueError(f"{path}: a labels CSV needs a `label` column and a `sha256` or `file` column")
        out: list[Label | None] = []
        for row in reader:
            text = (row.get("label") or "").strip()
            key = row.get("sha256") or PurePosixPath((row.get("file") or "").replace("\\", "/")).stem
            by = (row.get("labelled_by") or "").strip() or labelled_by
            out.append(Label(check_sha256(key), text, by, (row.get("labelled_at") or "").strip()) if text else None)
    return out


def _studio_labels(path: Path, labelled_by: str) -> list[Label | None]:
    tasks = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise QueueError(f"{path}: expected a Label Studio JSON export (a list of tasks)")
    return [_studio_label(task, labelled_by, path) for task in tasks]


def _task_sha(task: Mapping, path: Path) -> str:
    data = task.get("data", task)
    if data.get("sha256"):
        return check_sha256(data["sha256"])
    url = str(data.get("image") or "")
    if not url:
        raise QueueError(f"{path}: a task has neither data.sha256 nor data.image: {str(task)[:200]}")
    query = urlparse(url).query
    name = unquote(query.split("d=", 1)[1] if "d=" in query else urlparse(url).path)
    return check_sha256(PurePosixPath(name).stem.split("-")[-1])


def _studio_label(task: Mapping, labelled_by: str, path: Path) -> Label | None:
    sha = _task_sha(task, path)
    if "annotations" not in task:  # JSON-MIN: the choice under the control's name
        choice = task.get(FROM_NAME)
        by = str(task.get("annotator") or labelled_by)
        return _label(sha, [choice] if isinstance(choice, str) else choice, by, str(task.get("updated_at") or ""), path)
    done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not done:
        return None
    last = max(done, key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))
    choices = [
        c
        for r in last.get("result") or []
        if r.get("type") == "choices"
        for c in (r.get("value") or {}).get("choices", [])
    ]
    who = last.get("completed_by")
    by = who.get("email", "") if isinstance(who, dict) else (f"label-studio user {who}" if who is not None else "")
    return _label(sha, choices, by or labelled_by, str(last.get("updated_at") or last.get("created_at") or ""), path)


def _label(sha: str, choices, by: str, at: str, path: Path) -> Label | None:
    if not choices:
        return None
    if len(choices) != 1:
        raise QueueError(f"{path}: item {sha} has {len(choices)} choices {choices}; one label per image")
    return Label(sha, str(choices[0]).strip(), by, at)


def _check_label(label: str, known: set[str], allow_new: bool) -> None:
    bad = not label or label in {".", ".."} or label.startswith(".") or any(c in label for c in "/\\\0")
    if bad or len(label) > MAX_LABEL_CHARS:
        raise QueueError(f"bad label {label!r}: it names a class folder (no path separators, no leading dot)")
    if not allow_new and label not in known:
        raise QueueError(
            f"unknown label {label!r}: not a class of the data folder nor of the model (known: {sorted(known)}); "
            "a new class needs allow_new_classes (--new-class)"
        )


def merge(
    labels: Sequence[Label],
    items: Mapping[str, QueueItem],
    image_path: Callable[[QueueItem], Path],
    data_folder: Path,
    class_names: Callable[[str], list[str]],
    allow_new: bool,
    now: float,
) -> ImportReport:
    """Check every label, then copy each image to `data_folder/<label>/al-<sha256[:16]>.png` with its record."""
    if (data_folder / "train").is_dir():
        raise QueueError(f"{data_folder} holds split folders; import into a folder per class")
    existing = (
        {p.name for p in data_folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
        if data_folder.is_dir()
        else set()
    )
    plan = []
    for label in labels:
        item = items[label.sha256]
        _check_label(label.label, existing | set(class_names(item.model_version)), allow_new)
        target = data_folder / label.label / f"al-{item.sha256[:16]}.png"
        if target.exists():
            raise QueueError(f"{target} already exists: item {item.sha256} was imported before")
        if not image_path(item).is_file():
            raise QueueError(f"the queued image of {item.sha256} is missing: {image_path(item)}")
        plan.append((label, item, target))
    report = ImportReport()
    at = iso(now)
    for label, item, target in plan:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image_path(item), target)
        record = data_folder / PROVENANCE / label.label / f"{target.name}.json"
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(_provenance(label, item, target, at), indent=1))
        report.imported.append(target)
    return report


def _provenance(label: Label, item: QueueItem, target: Path, now: str) -> dict:
    return {
        "source": SOURCE,
        "file": f"{target.parent.name}/{target.name}",
        "sha256_received": item.sha256,
        "label": label.label,
        "predicted": item.predicted,
        "confidence": item.confidence,
        "margin": item.margin,
        "entropy": item.entropy,
        "model_version": item.model_version,
        "queued_at": item.queued_iso,
        "labelled_at": label.labelled_at or now,
        "labelled_by": label.labelled_by,
        "imported_at": now,
    }
