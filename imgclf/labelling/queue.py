"""`LabelQueue`: the folder of uncertain images waiting for a label, `images/<sha256>.png` plus a SQLite
index (`index.sqlite`). Every change runs in one `BEGIN IMMEDIATE` transaction, so threads and processes
(the service's workers, the CLI) may offer, list, import and purge at once without corrupting it.

Limits are applied on every offer: items older than `max_age_days` are deleted, then the oldest go
until the new one fits `max_items` and `max_bytes`. The per-class quota refuses rather than evicts."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from imgclf import paths
from imgclf.labelling import exports, imports
from imgclf.labelling.images import clean_png
from imgclf.labelling.policy import QueuePolicy, uncertainty
from imgclf.labelling.records import QueueError, QueueItem, check_sha256

INDEX = "index.sqlite"
IMAGES = "images"
DAY_S = 86400.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    sha256 TEXT PRIMARY KEY, predicted TEXT NOT NULL, confidence REAL NOT NULL, margin REAL NOT NULL,
    entropy REAL NOT NULL, top_k TEXT NOT NULL, model_version TEXT NOT NULL, queued_at REAL NOT NULL,
    size_bytes INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS items_by_age ON items (queued_at);
CREATE INDEX IF NOT EXISTS items_by_class ON items (predicted);
CREATE TABLE IF NOT EXISTS models (model_version TEXT PRIMARY KEY, class_names TEXT NOT NULL);
"""
_COLUMNS = "sha256, predicted, confidence, margin, entropy, top_k, model_version, queued_at, size_bytes, width, height"


def _item(row: tuple) -> QueueItem:
    top = tuple((str(label), float(score)) for label, score in json.loads(row[5]))
    return QueueItem(row[0], row[1], row[2], row[3], row[4], top, row[6], row[7], row[8], row[9], row[10])


class LabelQueue:
    """The queue in `folder` (default: the state directory's `label-queue/`), under `policy`.
    `clock` (unix seconds) is injectable so tests move time without sleeping."""

    def __init__(
        self,
        folder: str | Path | None = None,
        policy: QueuePolicy | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.folder = Path(folder) if folder is not None else paths.label_queue_dir()
        self.policy = policy or QueuePolicy()
        self.clock = clock
        self._readers = threading.local()
        (self.folder / IMAGES).mkdir(parents=True, exist_ok=True)
        with self._write() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)

    # -- storage -----------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.folder / INDEX, timeout=60, isolation_level=None)

    def _reader(self) -> sqlite3.Connection:
        """This thread's connection for the look before an offer: opening one costs more than the look."""
        db = getattr(self._readers, "db", None)
        if db is None:
            db = self._readers.db = self._connect()
        return db

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the database's write lock from the start."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def image_path(self, item: QueueItem | str) -> Path:
        sha = item.sha256 if isinstance(item, QueueItem) else item
        return self.folder / IMAGES / f"{sha}.png"

    def _delete(self, db: sqlite3.Connection, where: str, args: Sequence = ()) -> int:
        """Delete matching rows and their images (inside the write lock, so no offer re-creates one between)."""
        shas = [r[0] for r in db.execute(f"SELECT sha256 FROM items WHERE {where}", args)]
        for sha in shas:
            db.execute("DELETE FROM items WHERE sha256 = ?", (sha,))
            self.image_path(sha).unlink(missing_ok=True)
        return len(shas)

    # -- offering ----------------------------------------------------------------------------------

    def offer(
        self,
        image: Image.Image | np.ndarray,
        *,
        sha256: str,
        probabilities: Sequence[float] | np.ndarray,
        class_names: Sequence[str],
        model_version: str,
        top_k: int = 3,
    ) -> bool:
        """Queue one single-label prediction if it is uncertain enough, its sha256 is new, its predicted
        class is under quota and the image fits `max_bytes`. True when queued. Cheap when refused for
        certainty (nothing is read or encoded); call it off the event loop, it encodes and writes."""
        probs = np.asarray(probabilities, dtype=np.float64).ravel()
        if probs.size != len(class_names):
            raise ValueError(f"{probs.size} probabilities for {len(class_names)} class names")
        signals = uncertainty(probs)
        if not self.policy.accepts(signals):
            return False
        sha = check_sha256(sha256)
        order = np.argsort(-probs, kind="stable")[: max(1, top_k)]
        predicted = str(class_names[order[0]])
        if not self._room_for(self._reader(), sha, predicted):  # a cheap look before encoding; again below
            return False
        png, width, height = clean_png(image, self.policy.max_side)
        if len(png) > self.policy.max_bytes:
            return False
        top = json.dumps([[str(class_names[i]), float(probs[i])] for i in order])
        with self._write() as db:
            now = self.clock()
            self._delete(db, "queued_at < ?", (now - self.policy.max_age_days * DAY_S,))
            if not self._room_for(db, sha, predicted):
                return False
            self._make_room(db, len(png))
            _write_atomically(self.image_path(sha), png)
            row = (sha, predicted, float(probs[order[0]]), signals.margin, signals.entropy, top, str(model_version))
            db.execute(
                f"INSERT INTO items ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", (*row, now, len(png), width, height)
            )
            names = json.dumps([str(n) for n in class_names])
            db.execute("INSERT OR REPLACE INTO models VALUES (?, ?)", (str(model_version), names))
        return True

    def _room_for(self, db: sqlite3.Connection, sha: str, predicted: str) -> bool:
        """Not queued yet, and the predicted class is under its quota."""
        if db.execute("SELECT 1 FROM items WHERE sha256 = ?", (sha,)).fetchone():
            return False
        (count,) = db.execute("SELECT COUNT(*) FROM items WHERE predicted = ?", (predicted,)).fetchone()
        return count < self.policy.per_class_quota

    def _make_room(self, db: sqlite3.Connection, new_bytes: int) -> None:
        """Drop the oldest items until one more item of `new_bytes` fits both limits."""
        rows = db.execute("SELECT sha256, size_bytes FROM items ORDER BY queued_at DESC, sha256 DESC").fetchall()
        kept, total = 0, new_bytes
        for sha, size in rows:  # newest first: keep while both limits hold
            if kept + 1 < self.policy.max_items and total + size <= self.policy.max_bytes:
                kept, total = kept + 1, total + size
            else:
                db.execute("DELETE FROM items WHERE sha256 = ?", (sha,))
                self.image_path(sha).unlink(missing_ok=True)

    # -- reading, removing -------------------------------------------------------------------------

    def items(self, shas: Sequence[str] | None = None) -> list[QueueItem]:
        """Queued items within the age limit, oldest first (all of them, or those of `shas`)."""
        cutoff = self.clock() - self.policy.max_age_days * DAY_S
        with contextlib.closing(self._connect()) as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM items WHERE queued_at >= ? ORDER BY queued_at, sha256", (cutoff,)
            )
            found = [_item(r) for r in rows]
        if shas is None:
            return found
        wanted = set(shas)
        return [item for item in found if item.sha256 in wanted]

    def class_names(self, model_version: str) -> list[str]:
        """The classes of the model version that queued an item (what a label may be)."""
        with contextlib.closing(self._connect()) as db:
            row = db.execute("SELECT class_names FROM models WHERE model_version = ?", (model_version,)).fetchone()
        return json.loads(row[0]) if row else []

    def remove(self, shas: Sequence[str]) -> int:
        with self._write() as db:
            return sum(self._delete(db, "sha256 = ?", (check_sha256(s),)) for s in shas)

    def purge(self, older_than_days: float | None = None, all: bool = False) -> int:
        """Delete items queued more than `older_than_days` ago (default: the policy's age limit), or every
        item; images without a row (a crash between write and commit) go too. Returns items deleted."""
        if older_than_days is not None and older_than_days < 0:
            raise QueueError(f"older_than_days must be >= 0, got {older_than_days}")
        days = self.policy.max_age_days if older_than_days is None else older_than_days
        with self._write() as db:
            removed = (
                self._delete(db, "1 = 1") if all else self._delete(db, "queued_at < ?", (self.clock() - days * DAY_S,))
            )
            known = {r[0] for r in db.execute("SELECT sha256 FROM items")}
            for path in (self.folder / IMAGES).iterdir():
                if path.stem not in known:
                    path.unlink(missing_ok=True)
        return removed

    # -- exchange with labellers -------------------------------------------------------------------

    def export_csv(self, path: str | Path) -> int:
        return exports.write_csv(self.items(), self.image_path, path)

    def export_label_studio(self, path: str | Path, url_prefix: str = exports.LOCAL_FILES) -> int:
        return exports.write_label_studio(self.items(), url_prefix, path)

    def import_labels(
        self, path: str | Path, data_folder: str | Path, labelled_by: str = "", allow_new_classes: bool = False
    ) -> imports.ImportReport:
        """Labels from a CSV (sha256 or file, label) or a Label Studio JSON export -> the images copied into
        `data_folder/<label>/` with a provenance record each; the imported items leave the queue."""
        labels, unlabelled = imports.read_labels(path, labelled_by)
        items = {item.sha256: item for item in self.items([label.sha256 for label in labels])}
        unknown = sorted({label.sha256 for label in labels} - items.keys())
        if unknown:
            raise QueueError(
                f"{len(unknown)} labelled item(s) not in the queue (imported, purged or expired?): {unknown[:5]}"
            )
        report = imports.merge(
            labels, items, self.image_path, Path(data_folder), self.class_names, allow_new_classes, self.clock()
        )
        self.remove([label.sha256 for label in labels])
        report.unlabelled = unlabelled
        return report


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
