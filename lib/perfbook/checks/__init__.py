"""Pure analysis: each check takes data (DataFrames, dicts) and thresholds, returns tables and Findings."""
from __future__ import annotations

import math
from typing import Any


def number(x: Any) -> float | None:
    """A finite-or-infinite float from a metric value; None for missing, NaN or non-numbers."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v
