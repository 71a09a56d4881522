"""What long work and third-party libraries put on the console."""

from __future__ import annotations

import logging

from imgclf.logs import Progress, quiet_third_party


def _record(name: str, level: int, path: str, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, path, 1, message, None, None)


def test_known_chatter_is_demoted_to_debug_and_the_rest_passes():
    quiet_third_party()
    quiet_third_party()  # idempotent: one filter per logger
    root = logging.getLogger()
    assert sum(type(f).__name__ == "_Demote" for f in root.filters) == 1
    previous = root.level
    root.setLevel(logging.INFO)
    try:
        ort = _record(
            "root", logging.INFO, "/x/onnxruntime/quantization/qdq_quantizer.py", "Increased scale[3] for weight"
        )
        assert not root.filter(ort) and ort.levelno == logging.DEBUG
        ours = _record("root", logging.INFO, "/x/imgclf/export/int8_search.py", "INT8 recipe 1/6 ...")
        assert root.filter(ours) and ours.levelno == logging.INFO
        ort_warning = _record("root", logging.WARNING, "/x/onnxruntime/quantization/base.py", "a real problem")
        assert root.filter(ort_warning) and ort_warning.levelno == logging.WARNING
        root.setLevel(logging.DEBUG)  # with debug logging on, the demoted lines show, as DEBUG
        assert root.filter(_record("root", logging.INFO, "/x/onnxruntime/quantization/q.py", "Increased scale"))
    finally:
        root.setLevel(previous)
    tracker = logging.getLogger("zenml.integrations.mlflow.experiment_trackers.mlflow_experiment_tracker")
    tracker.setLevel(logging.INFO)
    assert not tracker.filter(
        _record(tracker.name, logging.WARNING, "/z.py", "Failed to disable MLflow autologging: fastai")
    )
    assert tracker.filter(_record(tracker.name, logging.WARNING, "/z.py", "the tracking server is unreachable"))


def test_progress_is_silent_when_quick_and_reports_when_slow(caplog, monkeypatch):
    clock = iter([0.0, 1.0, 2.0])
    monkeypatch.setattr("imgclf.logs.time.monotonic", lambda: next(clock))
    log = logging.getLogger("test.progress")
    with caplog.at_level(logging.INFO, logger="test.progress"):
        quick = Progress("decoding", 10, log, unit="images", every_s=10)
        quick.advance(10)
        quick.finish()
        assert caplog.messages == []
        clock = iter([0.0, 11.0, 22.0, 30.0])
        slow = Progress("decoding", 10, log, unit="images", every_s=10)
        slow.advance(4)
        slow.advance(6)
        slow.finish()
    assert caplog.messages == [
        "decoding: 4/10 images (40%), 0.4 images/s",
        "decoding: 10 images in 30 s, 0.3 images/s",
    ]
