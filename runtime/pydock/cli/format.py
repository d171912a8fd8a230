"""Small text helpers for CLI tables: relative times, truncation, aligned columns."""

from __future__ import annotations

import time
from calendar import timegm
from collections.abc import Sequence


def parse_time(stamp: str | None) -> float | None:
    if not stamp or stamp.startswith("0001"):
        return None
    try:
        return timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def ago(stamp: str | None, *, suffix: str = " ago") -> str:
    """``2024-01-01T00:00:00...Z`` -> ``3 minutes ago`` (docker's wording)."""
    t = parse_time(stamp)
    if t is None:
        return ""
    secs = max(0, int(time.time() - t))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if secs >= size:
            n = secs // size
            return f"{n} {unit}{'s' if n != 1 else ''}{suffix}"
    if secs < 1:
        return f"Less than a second{suffix}"
    return f"{secs} second{'s' if secs != 1 else ''}{suffix}"


def truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["   ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=False)).rstrip()
             for r in [header, *rows]]
    return "\n".join(lines)
