"""Where prediction rows go: the target URL, its retention, and the two back ends behind one small
interface (insert a batch, apply retention, select a window).

`IMGCLF_PREDICTION_LOG` names the target: unset or empty, SQLite at
`paths.monitoring_dir()/predictions.db`; `sqlite:///relative.db` or `sqlite:////absolute.db` (the
SQLAlchemy spelling), SQLite through the standard library (the serving image has no SQLAlchemy);
any other SQLAlchemy URL (`postgresql://...`, `sqlite+pysqlite:///...`), SQLAlchemy Core with the
same table; `off`, nothing is logged. SQLite runs in WAL mode with a busy timeout, so several
processes (BentoML workers) can append to one file: readers never block writers, writers queue.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from imgclf import paths
from imgclf.monitoring.record import COLUMNS, DTYPES

LOG_ENV = "IMGCLF_PREDICTION_LOG"
DAYS_ENV = "IMGCLF_PREDICTION_LOG_DAYS"
MAX_ROWS_ENV = "IMGCLF_PREDICTION_LOG_MAX_ROWS"
OFF = "off"
TABLE = "predictions"
SQLITE_PREFIX = "sqlite:///"
BUSY_TIMEOUT_S = 30.0
_MICROS_PER_DAY = 86_400 * 1_000_000


def default_path() -> Path:
    return paths.monitoring_dir() / "predictions.db"


def log_target(url: str | None = None) -> str | None:
    """The target URL: `url`, else `IMGCLF_PREDICTION_LOG`, else the default SQLite file; None = off."""
    chosen = (url if url is not None else os.environ.get(LOG_ENV, "")).strip()
    if chosen.lower() == OFF:
        return None
    if not chosen:
        return SQLITE_PREFIX + str(default_path().resolve())
    if "://" not in chosen:
        raise ValueError(f"{LOG_ENV}={chosen!r} is not a database URL: use sqlite:///path, a SQLAlchemy URL or 'off'")
    return chosen


@dataclass(frozen=True)
class Retention:
    """Rows older than `days` are deleted, and beyond `max_rows` the oldest are."""

    days: float = 30.0
    max_rows: int = 1_000_000

    def __post_init__(self) -> None:
        if not self.days > 0 or self.max_rows < 1:
            raise ValueError(f"retention needs days > 0 and max_rows >= 1, got {self.days} and {self.max_rows}")

    @classmethod
    def from_env(cls) -> Retention:
        try:
            days = float(os.environ.get(DAYS_ENV) or cls.days)
            max_rows = int(os.environ.get(MAX_ROWS_ENV) or cls.max_rows)
        except ValueError as exc:
            raise ValueError(f"{DAYS_ENV} must be a number of days and {MAX_ROWS_ENV} a whole number: {exc}") from None
        return cls(days=days, max_rows=max_rows)

    def cutoff(self, now_us: int) -> int:
        return now_us - int(self.days * _MICROS_PER_DAY)


@dataclass(frozen=True)
class Window:
    """A selection: times in integer microseconds since the epoch (UTC), `since` inclusive, `until`
    exclusive; `last` keeps the newest rows of the selection."""

    since_us: int | None = None
    until_us: int | None = None
    last: int | None = None
    model_version: str | None = None


class Store(Protocol):
    def insert(self, rows: list[tuple]) -> None: ...
    def retain(self, retention: Retention, now_us: int) -> int: ...
    def select(self, window: Window) -> list[tuple]: ...
    def close(self) -> None: ...


def open_store(url: str, *, create: bool = True) -> Store:
    if url.startswith(SQLITE_PREFIX):
        return SqliteStore(Path(url[len(SQLITE_PREFIX) :]), create=create)
    return SqlAlchemyStore(url, create=create)


def _sql_type(column: str) -> str:
    dtype = DTYPES[column]
    if column == "time" or dtype == "int64":
        return "INTEGER"
    return {"string": "TEXT", "float64": "REAL", "object": "BLOB"}[dtype]


def _where(window: Window) -> tuple[str, list]:
    clauses, params = [], []
    for clause, value in (
        ("time >= ?", window.since_us),
        ("time < ?", window.until_us),
        ("model_version = ?", window.model_version),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


class SqliteStore:
    """The default: one SQLite file in WAL mode (synchronous=NORMAL: a committed row survives a killed
    process; only a power cut may lose the last commits). A new file gets auto_vacuum=INCREMENTAL, so
    the pages retention frees are handed back to the file system by `PRAGMA incremental_vacuum`."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        if not create and not path.is_file():
            raise FileNotFoundError(f"no prediction log at {path} (set {LOG_ENV} or pass the URL it was written to)")
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
        exists = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (TABLE,)).fetchone()
        if create and not exists:  # a new file: no write lock is taken when the table is already there
            self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # takes effect on a new, empty file only
            self._db.execute("PRAGMA journal_mode = WAL")  # kept in the file
            columns = ", ".join(f"{name} {_sql_type(name)}" for name in COLUMNS)
            with self._transaction():
                self._db.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY, {columns})")
                self._db.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_time ON {TABLE} (time)")
        self._db.execute("PRAGMA synchronous = NORMAL")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction; IMMEDIATE takes the write lock at the start (waiting up to the busy
        timeout for another process), so it never fails halfway on an upgrade."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def insert(self, rows: list[tuple]) -> None:
        marks = ", ".join("?" for _ in COLUMNS)
        with self._transaction():  # all of the batch or none
            self._db.executemany(f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({marks})", rows)

    def retain(self, retention: Retention, now_us: int) -> int:
        with self._transaction():
            deleted = self._db.execute(f"DELETE FROM {TABLE} WHERE time < ?", (retention.cutoff(now_us),)).rowcount
            keep_from = self._db.execute(
                f"SELECT time FROM {TABLE} ORDER BY time DESC LIMIT 1 OFFSET ?", (retention.max_rows - 1,)
            ).fetchone()
            if keep_from is not None:
                deleted += self._db.execute(f"DELETE FROM {TABLE} WHERE time < ?", keep_from).rowcount
        if deleted:
            self._db.execute("PRAGMA incremental_vacuum")
        return deleted

    def select(self, window: Window) -> list[tuple]:
        where, params = _where(window)
        columns = ", ".join(COLUMNS)
        if window.last is None:
            return self._db.execute(f"SELECT {columns} FROM {TABLE}{where} ORDER BY time, id", params).fetchall()
        newest = self._db.execute(
            f"SELECT {columns} FROM {TABLE}{where} ORDER BY time DESC, id DESC LIMIT ?", [*params, window.last]
        ).fetchall()
        return newest[::-1]

    def close(self) -> None:
        self._db.close()


class SqlAlchemyStore:
    """Any database SQLAlchemy reaches (PostgreSQL, MySQL, ...), the same table through SQLAlchemy Core."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        import sqlalchemy as sa

        self._sa = sa
        self._engine = sa.create_engine(url, pool_pre_ping=True)
        types = {"INTEGER": sa.BigInteger, "TEXT": sa.Text, "REAL": sa.Float, "BLOB": sa.LargeBinary}
        self._table = sa.Table(
            TABLE,
            sa.MetaData(),
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
            *(sa.Column(name, types[_sql_type(name)](), index=name == "time") for name in COLUMNS),
        )
        if create:
            self._table.metadata.create_all(self._engine, checkfirst=True)

    def insert(self, rows: list[tuple]) -> None:
        with self._engine.begin() as conn:
            conn.execute(self._table.insert(), [dict(zip(COLUMNS, row)) for row in rows])

    def retain(self, retention: Retention, now_us: int) -> int:
        sa, table = self._sa, self._table
        with self._engine.begin() as conn:
            deleted = conn.execute(table.delete().where(table.c.time < retention.cutoff(now_us))).rowcount
            keep_from = conn.execute(
                sa.select(table.c.time).order_by(table.c.time.desc()).limit(1).offset(retention.max_rows - 1)
            ).scalar()
            if keep_from is not None:
                deleted += conn.execute(table.delete().where(table.c.time < keep_from)).rowcount
        return deleted

    def select(self, window: Window) -> list[tuple]:
        sa, table = self._sa, self._table
        query = sa.select(*(table.c[name] for name in COLUMNS))
        for column, op, value in (
            ("time", "__ge__", window.since_us),
            ("time", "__lt__", window.until_us),
            ("model_version", "__eq__", window.model_version),
        ):
            if value is not None:
                query = query.where(getattr(table.c[column], op)(value))
        with self._engine.connect() as conn:
            if window.last is None:
                return [tuple(r) for r in conn.execute(query.order_by(table.c.time, table.c.id))]
            newest = conn.execute(query.order_by(table.c.time.desc(), table.c.id.desc()).limit(window.last))
            return [tuple(r) for r in newest][::-1]

    def close(self) -> None:
        self._engine.dispose()
