"""The active-learning queue: what it accepts, what it keeps (a bare PNG), its limits, its exports and
imports, purging, two processes at once, and `imgclf queue` end to end. Time is a fake clock."""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import multiprocessing
import sqlite3
import struct

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from imgclf.cli import main
from imgclf.labelling.policy import QueuePolicy, uncertainty
from imgclf.labelling.queue import IMAGES, INDEX, LabelQueue
from imgclf.labelling.records import QueueError

CLASSES = [str(i) for i in range(10)]
UNSURE = [0.45, 0.40] + [0.15 / 8] * 8  # margin 0.05, predicted "0"
SURE = [0.91] + [0.01] * 9
DAY = 86400.0


class Clock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@functools.cache
def _scans() -> np.ndarray:
    return load_digits().images


def digit(i: int, side: int = 32) -> np.ndarray:
    """A real digit scan as an RGB uint8 image."""
    scan = _scans()[i]
    grey = Image.fromarray((scan * 255 / 16).astype(np.uint8)).resize((side, side), Image.NEAREST)
    return np.repeat(np.asarray(grey)[..., None], 3, axis=2)


def sha(i: int) -> str:
    return hashlib.sha256(f"upload {i}".encode()).hexdigest()


def unsure_for(label: int) -> list[float]:
    """Probabilities with top-1 `label` and a margin of 0.05."""
    p = np.full(10, 0.15 / 8)
    p[label], p[(label + 1) % 10] = 0.45, 0.40
    return p.tolist()


def offer(queue: LabelQueue, i: int, probs=UNSURE, image=None) -> bool:
    return queue.offer(
        digit(i) if image is None else image, sha256=sha(i), probabilities=probs, class_names=CLASSES, model_version="7"
    )


def png_chunks(data: bytes) -> list[str]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append(data[pos + 4 : pos + 8].decode("ascii"))
        pos += 12 + length
    return chunks


def test_uncertainty_signals():
    assert uncertainty([0.5, 0.5]).margin == pytest.approx(0.0)
    assert uncertainty([0.5, 0.5]).entropy == pytest.approx(1.0)
    assert uncertainty([1.0, 0.0, 0.0]).entropy == pytest.approx(0.0)
    assert uncertainty(SURE).margin == pytest.approx(0.90)
    with pytest.raises(ValueError, match="sum to 1"):
        uncertainty([0.2, 0.2])


def test_offers_are_taken_by_signal_threshold_quota_and_sha256(tmp_path):
    queue = LabelQueue(tmp_path / "q", QueuePolicy(signal="margin", threshold=0.1, per_class_quota=2), Clock())
    assert not offer(queue, 0, SURE)  # confident: refused
    assert offer(queue, 0)
    assert not offer(queue, 0)  # the same sha256 again
    assert offer(queue, 1)
    assert not offer(queue, 2)  # class "0" is at its quota of 2
    assert offer(queue, 3, unsure_for(5))  # another class still has room
    assert [(i.sha256, i.predicted) for i in queue.items()] == [(sha(0), "0"), (sha(1), "0"), (sha(3), "5")]
    entropy = LabelQueue(tmp_path / "e", QueuePolicy(signal="entropy", threshold=0.5), Clock())
    assert not offer(entropy, 0, SURE)  # normalised entropy of SURE is about 0.19
    assert offer(entropy, 1)  # about 0.67
    with pytest.raises(ValueError, match="class names"):
        entropy.offer(digit(0), sha256=sha(9), probabilities=[0.5, 0.5], class_names=CLASSES, model_version="7")


def test_item_and_byte_limits_drop_the_oldest_and_age_expires(tmp_path):
    clock = Clock()
    queue = LabelQueue(tmp_path / "q", QueuePolicy(max_items=3, max_age_days=2), clock)
    for i in range(5):
        clock.now += 60
        assert offer(queue, i, unsure_for(i))
    assert [i.sha256 for i in queue.items()] == [sha(2), sha(3), sha(4)]
    assert sorted(p.stem for p in (tmp_path / "q" / IMAGES).iterdir()) == sorted([sha(2), sha(3), sha(4)])
    clock.now += 1.5 * DAY
    assert offer(queue, 5, unsure_for(5))
    clock.now += 1 * DAY  # items 2-4 are now 2.5 days old, item 5 one day
    assert [i.sha256 for i in queue.items()] == [sha(5)]  # listing hides the expired ones
    assert offer(queue, 6, unsure_for(6))  # and an offer deletes them
    assert sorted(p.stem for p in (tmp_path / "q" / IMAGES).iterdir()) == sorted([sha(5), sha(6)])

    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # ~12 KB as PNG
    size = len(_png(noise))
    small = LabelQueue(tmp_path / "b", QueuePolicy(max_bytes=2 * size + size // 2), clock)
    for i in range(3):
        clock.now += 1
        assert offer(small, i, unsure_for(i), image=np.roll(noise, i, axis=0))
    assert [i.sha256 for i in small.items()] == [sha(1), sha(2)]
    assert sum(i.size_bytes for i in small.items()) <= 2 * size + size // 2
    big = np.random.default_rng(1).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    assert not offer(small, 9, unsure_for(9), image=big)  # larger than the whole byte limit


def _png(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


def test_the_kept_image_is_a_bare_png_upright_and_downscaled(tmp_path):
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # Make
    exif[0x0112] = 6  # Orientation: rotate 90 degrees to view
    exif[0x8825] = {2: (51.0, 30.0, 0.0)}  # GPS latitude
    jpeg = tmp_path / "photo.jpg"
    photo.save(jpeg, exif=exif, icc_profile=b"\x00" * 128, comment=b"secret")
    received = Image.open(jpeg)
    assert received.info.get("exif") and received.info.get("icc_profile")
    queue = LabelQueue(tmp_path / "q", QueuePolicy(max_side=100), Clock())
    assert offer(queue, 0, image=received)
    data = queue.image_path(sha(0)).read_bytes()
    assert png_chunks(data) == ["IHDR", "IDAT", "IEND"]  # no eXIf, iCCP, tEXt, pHYs...
    assert b"CameraMaker" not in data and b"secret" not in data
    kept = Image.open(io.BytesIO(data))
    assert kept.size == (100, 67)  # turned upright (200x300 -> 300x200), then the longer side to 100
    assert (queue.items()[0].width, queue.items()[0].height) == (100, 67)


def _filled_queue(tmp_path, n: int = 4) -> LabelQueue:
    queue = LabelQueue(tmp_path / "q", QueuePolicy(), Clock())
    for i in range(n):
        assert offer(queue, i, unsure_for(i))
    return queue


def test_exports_parse(tmp_path):
    queue = _filled_queue(tmp_path)
    assert queue.export_csv(tmp_path / "q.csv") == 4
    rows = _rows(tmp_path / "q.csv")
    assert [r["sha256"] for r in rows] == [sha(i) for i in range(4)]
    assert [r["predicted"] for r in rows] == ["0", "1", "2", "3"] and all(r["label"] == "" for r in rows)
    assert all(Image.open(r["file"]).size == (32, 32) for r in rows)
    assert rows[0]["top_k"].startswith("0:0.4500|1:0.4000|")
    assert queue.export_label_studio(tmp_path / "ls.json") == 4
    tasks = json.loads((tmp_path / "ls.json").read_text())
    assert tasks[1]["data"]["image"] == f"/data/local-files/?d=images/{sha(1)}.png"
    assert tasks[1]["data"]["sha256"] == sha(1)
    (prediction,) = tasks[1]["predictions"]
    assert prediction["model_version"] == "7" and prediction["score"] == pytest.approx(0.45)
    assert prediction["result"] == [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["1"]}}
    ]


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _label_csv(path, labels: dict[str, str]) -> None:
    rows = _rows(path)
    for row in rows:
        row["label"] = labels.get(row["sha256"], "")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_csv_labels_join_the_data_folder_with_provenance_and_leave_the_queue(tmp_path):
    queue = _filled_queue(tmp_path)
    data = tmp_path / "data"
    (data / "0").mkdir(parents=True)
    queue.export_csv(tmp_path / "q.csv")
    _label_csv(tmp_path / "q.csv", {sha(0): "8", sha(1): "1"})  # 2 and 3 not labelled yet
    report = queue.import_labels(tmp_path / "q.csv", data, labelled_by="ana")
    assert report.unlabelled == 2
    assert sorted(p.relative_to(data).as_posix() for p in report.imported) == [
        f"1/al-{sha(1)[:16]}.png",
        f"8/al-{sha(0)[:16]}.png",
    ]
    assert np.array_equal(np.asarray(Image.open(data / "8" / f"al-{sha(0)[:16]}.png")), digit(0))
    record = json.loads((data / ".provenance" / "8" / f"al-{sha(0)[:16]}.png.json").read_text())
    assert record["source"] == "active-learning queue" and record["model_version"] == "7"
    assert (record["label"], record["predicted"], record["labelled_by"]) == ("8", "0", "ana")
    assert record["sha256_received"] == sha(0) and record["labelled_at"] == "2023-11-14T22:13:20+00:00"
    assert [i.sha256 for i in queue.items()] == [sha(2), sha(3)]
    with pytest.raises(QueueError, match="not in the queue"):
        queue.import_labels(tmp_path / "q.csv", data)  # the same file again: those items are gone


def test_label_studio_export_is_imported(tmp_path):
    queue = _filled_queue(tmp_path, 2)
    queue.export_label_studio(tmp_path / "tasks.json")
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    exported = []  # what Label Studio's JSON export gives back: tasks with annotations
    for n, task in enumerate(tasks):
        result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["6"]}}]
        annotation = {"result": result, "completed_by": {"id": 3, "email": "bo@example.org"}, "was_cancelled": False}
        annotation["created_at"] = "2026-01-02T10:00:00.000000Z"
        exported.append({"id": n + 1, **task, "annotations": [annotation] if n == 0 else []})
    (tmp_path / "export.json").write_text(json.dumps(exported))
    report = queue.import_labels(tmp_path / "export.json", tmp_path / "data")
    assert [p.name for p in report.imported] == [f"al-{sha(0)[:16]}.png"] and report.unlabelled == 1
    record = json.loads((tmp_path / "data" / ".provenance" / "6" / f"al-{sha(0)[:16]}.png.json").read_text())
    assert (record["labelled_by"], record["labelled_at"]) == ("bo@example.org", "2026-01-02T10:00:00.000000Z")
    assert [i.sha256 for i in queue.items()] == [sha(1)]


def test_label_studio_json_min_export_found_by_image_url(tmp_path):
    queue = _filled_queue(tmp_path, 2)
    queue.export_label_studio(tmp_path / "tasks.json", url_prefix="http://files.local/queue/")
    urls = [task["data"]["image"] for task in json.loads((tmp_path / "tasks.json").read_text())]
    rows = [{"image": urls[0], "id": 1, "label": "4", "annotator": 5}, {"image": urls[1], "id": 2}]
    (tmp_path / "min.json").write_text(json.dumps(rows))  # JSON-MIN: no data.sha256, the choice by control name
    report = queue.import_labels(tmp_path / "min.json", tmp_path / "data")
    assert [p.parent.name for p in report.imported] == ["4"] and report.unlabelled == 1
    assert [i.sha256 for i in queue.items()] == [sha(1)]


def test_bad_labels_and_unknown_items_import_nothing(tmp_path):
    queue = _filled_queue(tmp_path, 2)
    data = tmp_path / "data"
    for labels, message in [
        ({sha(0): "3", sha(1): "../etc"}, "bad label"),
        ({sha(0): "3", sha(1): "cat"}, "unknown label 'cat'"),
    ]:
        queue.export_csv(tmp_path / "q.csv")
        _label_csv(tmp_path / "q.csv", labels)
        with pytest.raises(QueueError, match=message):
            queue.import_labels(tmp_path / "q.csv", data)
        assert not data.exists() and len(queue.items()) == 2  # checked first: nothing copied, nothing removed
    assert len(queue.import_labels(tmp_path / "q.csv", data, allow_new_classes=True).imported) == 2
    (tmp_path / "other.csv").write_text(f"sha256,label\n{'ab' * 32},3\n")
    with pytest.raises(QueueError, match="not in the queue"):
        queue.import_labels(tmp_path / "other.csv", data)
    (tmp_path / "nolabel.csv").write_text("sha256,class\n")
    with pytest.raises(QueueError, match="`label` column"):
        queue.import_labels(tmp_path / "nolabel.csv", data)


def test_purge_by_age_all_and_stray_files(tmp_path):
    clock = Clock()
    queue = LabelQueue(tmp_path / "q", QueuePolicy(max_age_days=30), clock)
    for i in range(3):
        assert offer(queue, i, unsure_for(i))
        clock.now += DAY
    (tmp_path / "q" / IMAGES / f"{sha(99)}.png").write_bytes(b"left by a crash")
    assert queue.purge(older_than_days=1.5) == 2  # queued 3 and 2 days ago; the last one 1 day ago stays
    assert [i.sha256 for i in queue.items()] == [sha(2)]
    assert sorted(p.stem for p in (tmp_path / "q" / IMAGES).iterdir()) == [sha(2)]
    assert queue.purge() == 0  # default: the policy's 30 days
    assert queue.purge(all=True) == 1 and queue.items() == []


def _offer_many(folder: str, start: int, barrier, results) -> None:
    queue = LabelQueue(folder, QueuePolicy(per_class_quota=1000))
    barrier.wait()
    accepted = sum(offer(queue, i, unsure_for(i % 10)) for i in range(start, start + 40))
    results.put(accepted)


def test_two_processes_offering_at_once_keep_one_consistent_index(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    folder = str(tmp_path / "q")
    LabelQueue(folder)
    workers = [ctx.Process(target=_offer_many, args=(folder, start, barrier, results)) for start in (0, 30)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    assert results.get(timeout=5) + results.get(timeout=5) == 70  # items 30..39 were offered by both
    items = LabelQueue(folder).items()
    assert sorted(i.sha256 for i in items) == sorted(sha(i) for i in range(70))
    assert sorted(p.stem for p in (tmp_path / "q" / IMAGES).iterdir()) == sorted(sha(i) for i in range(70))
    with sqlite3.connect(tmp_path / "q" / INDEX) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_queue_command_end_to_end(tmp_path, capsys):
    folder = str(tmp_path / "q")
    assert main(["queue", "--folder", folder, "list"]) == 0
    assert "is empty" in capsys.readouterr().out
    queue = LabelQueue(folder)
    for i in range(3):
        assert offer(queue, i, unsure_for(i))
    assert main(["queue", "--folder", folder, "list"]) == 0
    out = capsys.readouterr().out
    assert sha(2)[:12] in out and "3 items" in out
    out_csv = tmp_path / "export" / "q.csv"
    assert main(["queue", "--folder", folder, "export", "--format", "csv", "--out", str(out_csv)]) == 0
    ls = tmp_path / "export" / "ls.json"
    assert main(["queue", "--folder", folder, "export", "--format", "labelstudio", "--out", str(ls)]) == 0
    assert len(json.loads(ls.read_text())) == 3
    _label_csv(out_csv, {sha(0): "0", sha(1): "7"})
    data = tmp_path / "data"
    assert main(["queue", "--folder", folder, "import", str(out_csv), "--data", str(data), "--labelled-by", "cy"]) == 0
    assert "2 labelled images" in capsys.readouterr().out
    assert sorted(p.parent.name for p in data.glob("*/*.png")) == ["0", "7"]
    with pytest.raises(SystemExit, match=r"imgclf queue: .*not in the queue"):
        main(["queue", "--folder", folder, "import", str(out_csv), "--data", str(data)])
    assert main(["queue", "--folder", folder, "purge", "--all"]) == 0
    assert "1 items deleted" in capsys.readouterr().out
    assert LabelQueue(folder).items() == []
