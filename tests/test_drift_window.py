"""The monitoring window when no prediction log has been written yet: an empty window shaped like the
log's, so the decision is "not enough data" instead of an error."""

from __future__ import annotations

import logging

import pandas as pd

from imgclf.drift.detect import DriftConfig, detect_drift
from imgclf.drift.monitor import MonitoringConfig, load_window
from imgclf.monitoring.log import PredictionLog, read_window
from imgclf.monitoring.record import COLUMNS, DTYPES


def test_a_missing_log_is_an_empty_window_and_not_enough_data(tmp_path, caplog):
    missing = tmp_path / "nothing-served-yet" / "predictions.db"
    config = MonitoringConfig(log_url=f"sqlite:///{missing}", drift=DriftConfig(min_rows=20))
    with caplog.at_level(logging.WARNING, logger="imgclf.drift.monitor"):
        window = load_window(config, "1")
    assert window.empty and f"no prediction log at {missing}" in caplog.text
    assert not missing.exists(), "reading creates no log"

    written = f"sqlite:///{tmp_path / 'empty.db'}"
    PredictionLog(written).close()  # a log that exists and holds no rows: the same columns and types
    empty = read_window(written)
    assert list(window.columns) == list(COLUMNS) == list(empty.columns)
    assert window.dtypes.astype(str).to_dict() == DTYPES  # (an empty read gives `embedding` float64)
    assert window.dtypes.drop("embedding").equals(empty.dtypes.drop("embedding"))

    reference = pd.DataFrame({"brightness": [0.5] * 30, "label": ["0"] * 30})
    decision, snapshot = detect_drift(window, reference, config.drift)
    assert snapshot is None and not decision.drifted and not decision.enough_data
    assert decision.summary() == "not enough data: the window has 0 rows; at least 20 are needed"


def test_hours_windows_of_a_missing_log_are_empty_too(tmp_path):
    config = MonitoringConfig(log_url=f"sqlite:///{tmp_path / 'none.db'}", last=None, hours=24)
    assert load_window(config, "1").empty
