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


def ms(seconds: float | None) -> str:
    """Seconds as milliseconds for a title: ``9.5 ms`` under 10 ms, ``123 ms`` above, ``n/a`` for None."""
    if seconds is None:
        return "n/a"
    v = seconds * 1000
    return f"{v:.1f} ms" if v < 10 else f"{v:.0f} ms"
