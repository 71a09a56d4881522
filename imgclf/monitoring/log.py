"""The prediction log: `append` hands a row to a background writer and returns at once; the writer
commits batches to the store (see `store.py` for targets).

Flush policy: a batch is committed when it holds `batch_rows` rows or when its oldest row has waited
`flush_interval_s` (0.5 s by default), so every row is committed within about a second of its append.
A graceful stop (`close()`, also run at a normal interpreter exit) commits everything queued; a
`kill -9` loses the rows not yet committed, at most about the last second. When the queue is full
(the store cannot keep up) a row is dropped and counted, never waited for. Retention runs when the
log opens and every `retention_interval_s`.

Construct one log per process (per BentoML worker, after the fork): its thread does not survive a fork.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from datetime import UTC, datetime

from imgclf.monitoring.record import COLUMNS, DTYPES, PredictionRow, embedding_from_bytes, row_values, to_micros
from imgclf.monitoring.store import LOG_ENV, Retention, Window, log_target, open_store

log = logging.getLogger(__name__)
_STOP = object()


def _now_us() -> int:
    return to_micros(datetime.now(UTC))


class PredictionLog:
    """Appends prediction rows without blocking. `url` None: `IMGCLF_PREDICTION_LOG` (default SQLite
    under the state directory); "off": every append is a no-op."""

    def __init__(
        self,
        url: str | None = None,
        *,
        retention: Retention | None = None,
        queue_size: int = 10_000,
        batch_rows: int = 256,
        flush_interval_s: float = 0.5,
        retention_interval_s: float = 600.0,
    ) -> None:
        self.url = log_target(url)
        self.retention = retention or Retention.from_env()
        self.batch_rows, self.flush_interval_s = batch_rows, flush_interval_s
        self.retention_interval_s = retention_interval_s
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._dropped = self._written = self._failed = 0
        self._closed = self.url is None
        self._thread: threading.Thread | None = None
        if self.url is None:
            return
        self._store = open_store(self.url)  # a bad URL or an unwritable path fails here, at startup
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    @property
    def enabled(self) -> bool:
        return self.url is not None

    @property
    def counts(self) -> dict[str, int]:
        """written: committed rows; dropped: refused because the queue was full; failed: lost to a
        store error (logged)."""
        with self._lock:
            return {"written": self._written, "dropped": self._dropped, "failed": self._failed}

    def append(self, row: PredictionRow) -> bool:
        """Queue one row; False when it was not queued (log off or closed, or the queue full)."""
        if self._closed:
            return False
        try:
            self._queue.put_nowait(row_values(row))
            return True
        except queue.Full:
            with self._lock:
                self._dropped += 1
                dropped = self._dropped
            if dropped & (dropped - 1) == 0:  # 1, 2, 4, 8, ...: said, without flooding the log
                log.warning("prediction log queue full (%d rows): %d rows dropped so far", self._queue.maxsize, dropped)
            return False

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row appended before this call is committed (or lost to a store error)."""
        if self._closed:
            return True
        done = threading.Event()
        self._queue.put(done, timeout=timeout)
        return done.wait(timeout)

    def close(self, timeout: float | None = 60.0) -> None:
        """Commit everything queued, then stop the writer. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("prediction log: the writer did not drain its queue in %s s; closing without it", timeout)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            self._store.close()

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        next_retention = 0.0
        stop = False
        while not stop:
            if time.monotonic() >= next_retention:
                self._retain()
                next_retention = time.monotonic() + self.retention_interval_s
            wait = max(0.0, min(next_retention - time.monotonic(), self.retention_interval_s))
            batch, waiters, stop = self._collect(wait)
            self._write(batch)
            for event in waiters:
                event.set()

    def _collect(self, wait: float) -> tuple[list[tuple], list[threading.Event], bool]:
        """A batch: the first item waits up to `wait`; later ones until the batch is full or its first
        row has waited `flush_interval_s`."""
        batch: list[tuple] = []
        waiters: list[threading.Event] = []
        deadline = None
        while len(batch) < self.batch_rows:
            timeout = wait if deadline is None else deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=max(timeout, 0.0)) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, waiters, True
            if isinstance(item, threading.Event):
                waiters.append(item)
                break
            batch.append(item)
            if deadline is None:
                deadline = time.monotonic() + self.flush_interval_s
        return batch, waiters, False

    def _write(self, batch: list[tuple]) -> None:
        if not batch:
            return
        try:
            self._store.insert(batch)
        except Exception:
            log.exception("prediction log: %d rows lost (the store refused them)", len(batch))
            with self._lock:
                self._failed += len(batch)
            return
        with self._lock:
            self._written += len(batch)

    def _retain(self) -> None:
        try:
            deleted = self._store.retain(self.retention, _now_us())
        except Exception:
            log.exception("prediction log: retention failed (will retry)")
            return
        if deleted:
            log.info("prediction log: retention deleted %d rows", deleted)


def _micros(value: datetime | None, name: str) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"read_window {name} must be timezone-aware, got {value!r}")
    return to_micros(value.astimezone(UTC))


def read_window(
    url: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    last: int | None = None,
    model_version: str | None = None,
):
    """The logged rows as a pandas DataFrame with `COLUMNS` typed as `DTYPES`, oldest first: `since`
    inclusive, `until` exclusive, `last` the newest N of those, `model_version` one version's rows.
    `embedding` holds a float32 array per row (or None)."""
    import pandas as pd

    target = log_target(url)
    if target is None:
        raise ValueError(f"the prediction log is off ({LOG_ENV}=off): there is nothing to read")
    if last is not None and last < 1:
        raise ValueError(f"read_window last must be at least 1, got {last}")
    window = Window(_micros(since, "since"), _micros(until, "until"), last, model_version)
    store = open_store(target, create=False)
    try:
        rows = store.select(window)
    finally:
        store.close()
    frame = pd.DataFrame.from_records(rows, columns=list(COLUMNS))
    frame["time"] = pd.to_datetime(frame["time"].astype("int64"), unit="us", utc=True)
    frame["embedding"] = [embedding_from_bytes(blob) for blob in frame["embedding"]]
    return frame.astype({name: dtype for name, dtype in DTYPES.items() if name not in ("time", "embedding")})
