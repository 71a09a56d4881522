"""The prediction row and the prediction log: typed round trip through SQLite (and SQLAlchemy), the
flush policy (a graceful stop or a normal exit loses nothing; `kill -9` loses at most about the last
second), several processes on one file, retention, `off`, a full queue drops instead of blocking, and
URL sources keep the host only."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from imgclf.monitoring.log import PredictionLog, read_window
from imgclf.monitoring.record import COLUMNS, DTYPES, PredictionRow, margin_and_entropy, source_of_url
from imgclf.monitoring.stats import ImageStatistics
from imgclf.monitoring.store import Retention

ROOT = Path(__file__).resolve().parents[1]
STATS = ImageStatistics(brightness=0.4, contrast=0.2, saturation=0.1, sharpness=0.05, entropy=6.5, clipped=0.01)
ANSWER = {
    "label": "3",
    "confidence": 0.7,
    "top_k": [{"label": "3", "confidence": 0.7}, {"label": "8", "confidence": 0.2}],
}
PROBS = np.array([0.1, 0.7, 0.2])


def make_row(i: int, *, when: datetime | None = None, version: str = "1", embedding=(0.5, -1.25, 3.0)) -> PredictionRow:
    return PredictionRow.from_answer(
        ANSWER,
        PROBS,
        statistics=STATS,
        request_id=f"r{i}",
        model_version=version,
        model_stage="staging",
        source="upload",
        sha256=hashlib.sha256(str(i).encode()).hexdigest(),
        width=8,
        height=8,
        format="PNG",
        mode="L",
        latency_ms=2.5,
        embedding=None if embedding is None else np.asarray(embedding, dtype=np.float32),
        time=when,
    )


@pytest.fixture()
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'predictions.db'}"


def test_margin_and_entropy_from_the_probabilities():
    assert margin_and_entropy(np.array([0.25] * 4)) == (0.0, pytest.approx(math.log(4)))
    assert margin_and_entropy(np.array([0.0, 1.0, 0.0])) == (1.0, 0.0)
    row = make_row(0)
    assert row.margin == pytest.approx(0.5)
    assert row.pred_entropy == pytest.approx(-sum(p * math.log(p) for p in PROBS))
    with pytest.raises(ValueError, match="probabilities"):
        margin_and_entropy(np.array([0.5, np.nan]))


def test_a_row_refuses_naive_times_bad_sources_and_bad_hashes():
    good = make_row(0)
    with pytest.raises(ValueError, match="UTC"):
        PredictionRow(**{**good.__dict__, "time": datetime(2026, 1, 1)})
    with pytest.raises(ValueError, match="source"):
        PredictionRow(**{**good.__dict__, "source": "https://example.com/a.png"})
    with pytest.raises(ValueError, match="sha256"):
        PredictionRow(**{**good.__dict__, "sha256": "abc"})


def test_the_url_source_keeps_the_host_only():
    assert source_of_url("https://user:secret@Images.Example.com:8443/a/b.png?token=x#frag") == "url:images.example.com"
    assert source_of_url("http://[2001:db8::1]/x.jpg") == "url:2001:db8::1"
    with pytest.raises(ValueError, match="host"):
        source_of_url("/just/a/path.png")


def test_rows_round_trip_through_sqlite_typed(url):
    when = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)
    rows = [make_row(0, when=when), make_row(1, when=when + timedelta(seconds=1), version="2", embedding=None)]
    with PredictionLog(url) as log:
        assert all(log.append(row) for row in rows)
    frame = read_window(url)
    assert list(frame.columns) == list(COLUMNS)
    assert {name: str(frame[name].dtype) for name in COLUMNS if name != "embedding"} == {
        name: str(pd.Series(dtype=dtype).dtype) for name, dtype in DTYPES.items() if name != "embedding"
    }
    assert frame["time"].tolist() == [pd.Timestamp(when), pd.Timestamp(when + timedelta(seconds=1))]
    first = frame.iloc[0]
    for name in COLUMNS:
        if name not in ("time", "embedding"):
            assert first[name] == getattr(rows[0], name), name
    assert first["embedding"].dtype == np.float32 and first["embedding"].tolist() == [0.5, -1.25, 3.0]
    assert frame.iloc[1]["embedding"] is None
    assert frame["top_k"].map(lambda s: json.loads(s)[0]["label"]).tolist() == ["3", "3"]
    assert read_window(url, model_version="2")["request_id"].tolist() == ["r1"]


def test_windows_by_time_and_by_count(url):
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with PredictionLog(url) as log:
        for i in range(10):
            log.append(make_row(i, when=start + timedelta(minutes=i)))
    ids = lambda frame: frame["request_id"].tolist()  # noqa: E731
    assert ids(read_window(url, since=start + timedelta(minutes=7))) == ["r7", "r8", "r9"]
    assert ids(read_window(url, until=start + timedelta(minutes=2))) == ["r0", "r1"]
    assert ids(read_window(url, last=3)) == ["r7", "r8", "r9"]
    assert ids(read_window(url, until=start + timedelta(minutes=5), last=2)) == ["r3", "r4"]
    with pytest.raises(ValueError, match="timezone"):
        read_window(url, since=datetime(2026, 11, 1))


def test_a_graceful_stop_loses_nothing(url):
    log = PredictionLog(url, flush_interval_s=30.0, batch_rows=10_000)  # nothing would flush on its own
    for i in range(1000):
        log.append(make_row(i))
    log.close()
    assert len(read_window(url)) == 1000 and log.counts == {"written": 1000, "dropped": 0, "failed": 0}
    assert not log.append(make_row(1000))  # closed


CHILD = textwrap.dedent(
    """
    import os, sys, time
    from dataclasses import replace
    sys.path.insert(0, {tests!r})
    from test_prediction_log import make_row
    from imgclf.monitoring.log import PredictionLog

    url, name, count, batch_rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    log = PredictionLog(url, batch_rows=batch_rows)
    if len(sys.argv) > 5:  # wait for the parent's go (a file), so that two writers overlap
        print("ready", flush=True)
        while not os.path.exists(sys.argv[5]):
            time.sleep(0.01)
    i = 0
    while count < 0 or i < count:
        log.append(replace(make_row(i), request_id=f"{{name}}-{{i}}"))
        print(i, time.time(), flush=True)
        i += 1
        time.sleep(0.005)  # two writers started together overlap for seconds
    if name == "exit":
        sys.exit(0)  # no close(): the interpreter's exit must flush
    log.close()
    """
)


def child(
    tmp_path: Path, url: str, name: str, count: int, batch_rows: int = 8, go: Path | None = None
) -> subprocess.Popen:
    """A process appending `count` rows (-1: until killed), one per 5 ms, printing "i time" after each."""
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(ROOT / "tests")))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(script), url, name, str(count), str(batch_rows), *([str(go)] if go else [])],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )


def test_a_normal_exit_flushes_without_close(tmp_path, url):
    process = child(tmp_path, url, "exit", 300)
    process.communicate(timeout=120)
    assert process.returncode == 0
    assert len(read_window(url)) == 300


def test_kill_9_loses_at_most_about_the_last_second(tmp_path, url):
    process = child(tmp_path, url, "killed", -1, batch_rows=10_000)  # only the time policy flushes
    submitted: dict[str, float] = {}
    first = None
    for line in process.stdout:
        i, at = line.split()
        submitted[f"killed-{i}"] = float(at)
        first = first or float(at)
        if float(at) - first > 5.0:
            break
    os.kill(process.pid, signal.SIGKILL)
    killed_at = time.time()
    for line in process.stdout:  # what it printed before it died
        i, at = line.split()
        submitted[f"killed-{i}"] = float(at)
    process.wait(timeout=30)
    present = set(read_window(url)["request_id"])
    old = {rid for rid, at in submitted.items() if at < killed_at - 1.5}
    assert len(old) > 100  # the child ran long enough for the check to mean something
    assert old <= present, f"{len(old - present)} rows submitted over 1.5 s before the kill are missing"
    assert present <= set(submitted)


def test_two_processes_append_to_one_file(tmp_path, url):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    go = tmp_path / "go"
    writers = [child(tmp_path / name, url, name, 400, go=go) for name in ("a", "b")]
    assert [process.stdout.readline() for process in writers] == ["ready\n", "ready\n"]
    go.touch()
    for process in writers:
        process.communicate(timeout=180)
        assert process.returncode == 0
    ids = read_window(url)["request_id"].tolist()  # in time order
    assert len(ids) == 800 and set(ids) == {f"{name}-{i}" for name in "ab" for i in range(400)}
    turns = sum(a[0] != b[0] for a, b in pairwise(ids))
    assert turns > 10, "the two writers ran one after the other, not together"


def test_retention_deletes_old_rows_and_caps_the_count(url):
    now = datetime.now(UTC)
    with PredictionLog(url, retention=Retention(days=1000)) as log:
        for i in range(5):
            log.append(make_row(i, when=now - timedelta(days=40 + i)))
        for i in range(5, 15):
            log.append(make_row(i, when=now - timedelta(minutes=i)))
    assert len(read_window(url)) == 15
    PredictionLog(url, retention=Retention(days=30)).close()  # retention runs when a log opens
    assert sorted(read_window(url)["request_id"]) == sorted(f"r{i}" for i in range(5, 15))
    PredictionLog(url, retention=Retention(days=30, max_rows=4)).close()
    assert read_window(url)["request_id"].tolist() == ["r8", "r7", "r6", "r5"]


def test_retention_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("IMGCLF_PREDICTION_LOG_DAYS", "7")
    monkeypatch.setenv("IMGCLF_PREDICTION_LOG_MAX_ROWS", "500")
    assert Retention.from_env() == Retention(days=7, max_rows=500)
    monkeypatch.setenv("IMGCLF_PREDICTION_LOG_DAYS", "a week")
    with pytest.raises(ValueError, match="IMGCLF_PREDICTION_LOG_DAYS"):
        Retention.from_env()


def test_the_default_store_is_sqlite_in_wal_mode_under_the_state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLF_STATE", str(tmp_path / "state"))
    monkeypatch.delenv("IMGCLF_PREDICTION_LOG", raising=False)
    with PredictionLog() as log:
        log.append(make_row(0))
    path = tmp_path / "state" / "monitoring" / "predictions.db"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
    assert read_window()["request_id"].tolist() == ["r0"]


def test_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLF_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("IMGCLF_PREDICTION_LOG", "off")
    log = PredictionLog()
    assert not log.enabled and not log.append(make_row(0))
    log.close()
    assert not (tmp_path / "state").exists()
    with pytest.raises(ValueError, match="off"):
        read_window()


def test_a_full_queue_drops_and_counts_instead_of_blocking(url):
    """The store is locked by another connection, so the writer cannot commit: appends beyond the
    queue's room return False at once (the test would hang here if they waited)."""
    log = PredictionLog(url, queue_size=5, batch_rows=10)
    assert log.flush(timeout=60)  # the writer has started (and run retention)
    blocker = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    accepted = [log.append(make_row(i)) for i in range(100)]
    assert accepted.count(False) >= 100 - 5 - 10 and log.counts["dropped"] == accepted.count(False)
    blocker.execute("ROLLBACK")
    blocker.close()
    log.close()
    assert len(read_window(url)) == accepted.count(True) == log.counts["written"]


def test_any_sqlalchemy_url_works_the_same(tmp_path):
    url = f"sqlite+pysqlite:///{tmp_path / 'through-sqlalchemy.db'}"
    now = datetime.now(UTC)
    with PredictionLog(url) as log:
        log.append(make_row(0, when=now - timedelta(days=60)))
        log.append(make_row(1, when=now, embedding=None))
        log.append(make_row(2, when=now + timedelta(seconds=1)))
    assert read_window(url, last=2)["request_id"].tolist() == ["r1", "r2"]
    assert read_window(url)["embedding"].iloc[2].tolist() == [0.5, -1.25, 3.0]
    PredictionLog(url, retention=Retention(days=30)).close()
    assert read_window(url)["request_id"].tolist() == ["r1", "r2"]


def test_a_bad_target_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="IMGCLF_PREDICTION_LOG"):
        PredictionLog("predictions.db")
    with pytest.raises(FileNotFoundError, match="no prediction log"):
        read_window(f"sqlite:///{tmp_path / 'missing.db'}")
