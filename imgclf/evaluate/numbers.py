"""JSON-safe numbers for the reports: an undefined value is None, not NaN, so every report stays valid
JSON (MLflow, the dashboard and the materializer all refuse or mangle NaN)."""

from __future__ import annotations

import math
from typing import Any


def finite_or_none(x: Any) -> float | None:
    """A float, or None for missing / NaN / inf."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
