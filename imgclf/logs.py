"""What long work tells the console: progress as log lines, and third-party chatter kept out of sight.

Progress is logged, not drawn: a log line reaches a terminal, the ZenML step log and a CI log alike,
where a progress bar shows only on a terminal. Work that finishes quickly says nothing; slower work
logs a line every `every_s` seconds and one when it ends, with the rate.

Some libraries log routine details at INFO or WARNING (ONNX Runtime's quantiser logs one line per
re-scaled weight, hundreds per model); `quiet_third_party` turns the known ones into DEBUG records, so
they reach the console and the step log only when debug logging is on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class Progress:
    """Counts work done and logs how far it is, at most every `every_s` seconds."""

    def __init__(self, what: str, total: int, log: logging.Logger, unit: str = "items", every_s: float = 10.0) -> None:
        self.what, self.total, self.log, self.unit, self.every_s = what, total, log, unit, every_s
        self.done = 0
        self.started = self._last = time.monotonic()
        self._reported = False

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._last >= self.every_s and self.done < self.total:
            self._last, self._reported = now, True
            share = f" ({self.done / self.total:.0%})" if self.total else ""
            self.log.info("%s: %d/%d %s%s, %s", self.what, self.done, self.total, self.unit, share, self._rate(now))

    def finish(self) -> None:
        now = time.monotonic()
        if self._reported or now - self.started >= self.every_s:
            self.log.info(
                "%s: %d %s in %.0f s, %s", self.what, self.done, self.unit, now - self.started, self._rate(now)
            )

    def _rate(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        return f"{self.done / elapsed:.1f} {self.unit}/s"


def progress(
    items: Iterable[T],
    what: str,
    total: int,
    log: logging.Logger,
    unit: str = "items",
    every_s: float = 10.0,
    size=None,
) -> Iterator[T]:
    """Yield `items`, logging progress as `Progress` does; `size(item)` counts an item (default 1)."""
    tracker = Progress(what, total, log, unit, every_s)
    for item in items:
        yield item
        tracker.advance(size(item) if size is not None else 1)
    tracker.finish()


class _Demote(logging.Filter):
    """Turn matching records into DEBUG records, kept only where DEBUG is enabled."""

    def __init__(self, logger: logging.Logger, level: int, path_part: str, message_part: str) -> None:
        super().__init__()
        self.logger, self.level, self.path_part, self.message_part = logger, level, path_part, message_part

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != self.level or self.path_part not in record.pathname.replace("\\", "/"):
            return True
        if self.message_part not in record.getMessage():
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self.logger.isEnabledFor(logging.DEBUG)


# (logger name, level, part of the emitting file's path, part of the message): routine details that
# libraries log at INFO, or warn about when nothing is wrong
_CHATTER = (
    ("", logging.INFO, "/onnxruntime/quantization/", ""),  # one line per re-scaled weight while quantising
    # ZenML's MLflow tracker tries to switch off autologging for fastai, which is not installed
    (
        "zenml.integrations.mlflow.experiment_trackers.mlflow_experiment_tracker",
        logging.WARNING,
        "",
        "Failed to disable MLflow autologging",
    ),
    ("great_expectations.data_context.types.base", logging.INFO, "", "Created temporary directory"),
    # MLflow asks for type hints on the registry wrapper's predict; it takes image bytes, which its
    # type-hint signatures do not describe (a warning, routed to logging where ZenML captures warnings)
    ("py.warnings", logging.WARNING, "", "Add type hints to the `predict` method"),
)


def quiet_third_party() -> None:
    """Send known third-party chatter to the debug log: it shows only when debug logging is on
    (ZENML_LOGGING_VERBOSITY=DEBUG), and never crowds the console. Safe to call more than once."""
    for name, level, path_part, message_part in _CHATTER:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Demote) for f in logger.filters):
            logger.addFilter(_Demote(logger, level, path_part, message_part))
