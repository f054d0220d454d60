"""Numbers as the study report prints them (shared by the report's sections, so every table agrees)."""

from __future__ import annotations

import math
from typing import Any


def fmt_num(x: Any, digits: int = 3) -> str:
    """A number as the report prints it: fixed digits, tiny non-zero values in e-notation, else n/a."""
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(xf):
        return "n/a"
    if xf != 0 and abs(xf) < 0.5 * 10 ** -digits:
        return f"{xf:.1e}"  # tiny but not zero: keep the sign and size visible instead of "-0.000"
    return f"{xf:.{digits}f}"


def fmt_ci(est: Any, low: Any, high: Any) -> dict[str, str | None]:
    """Estimate and CI bounds as text; the bounds are None when the CI is not a finite number."""
    if not (isinstance(low, (int, float)) and math.isfinite(low)):
        return {"est": fmt_num(est), "low": None, "high": None}
    return {"est": fmt_num(est), "low": fmt_num(low), "high": fmt_num(high)}
