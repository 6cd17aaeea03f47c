"""Terminal rendering for `kiln status`: progress bars, sparklines, durations."""

from __future__ import annotations

from collections.abc import Sequence

_SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 40) -> str:
    """The last `width` values as block characters scaled between their min and max."""
    vals = [v for v in values if v == v][-width:]  # drop NaN
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    if hi == lo:
        return _SPARK[0] * len(vals)
    scale = (len(_SPARK) - 1) / (hi - lo)
    return "".join(_SPARK[int(round((v - lo) * scale))] for v in vals)


def progress_bar(done: float, total: float, width: int = 30) -> str:
    """`[#####.....]  42.0%`; clamps to [0, 100]%."""
    frac = 0.0 if total <= 0 else min(max(done / total, 0.0), 1.0)
    filled = int(round(frac * width))
    return f"[{'#' * filled}{'.' * (width - filled)}] {frac * 100:5.1f}%"


def duration(seconds: float | None) -> str:
    """Short human duration: 45s, 12m03s, 3h07m, 2d04h."""
    if seconds is None:
        return "-"
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"
