"""Text helpers for the CLI's tables, with docker's wording and layout."""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Callable, Iterable

from ..errors import PydockError, UsageError

_RFC3339 = re.compile(r"(.+?T\d\d:\d\d:\d\d)(\.\d+)?(Z|z|[+-]\d\d:\d\d)?")


def format_table(rows: list[list[str]]) -> str:
    """Columns padded like docker's tabwriter (at least 10 wide, 3 spaces apart)."""
    widths = [max(10, max(len(row[i]) for row in rows) + 3) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + row[-1] for row in rows
    )


def human_size(size: float) -> str:
    """Docker's decimal sizes with 3 significant digits: ``4.26MB``, ``512B``."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return f"{size:.3g}{units[i]}"


def human_duration(delta: dt.timedelta) -> str:
    """Docker's ``3 minutes ago`` wording."""
    seconds = int(delta.total_seconds())
    hours = int(delta.total_seconds() / 3600 + 0.5)
    if seconds < 1:
        text = "Less than a second"
    elif seconds == 1:
        text = "1 second"
    elif seconds < 60:
        text = f"{seconds} seconds"
    elif seconds // 60 == 1:
        text = "About a minute"
    elif seconds < 3600:
        text = f"{seconds // 60} minutes"
    elif hours == 1:
        text = "About an hour"
    elif hours < 48:
        text = f"{hours} hours"
    elif hours < 24 * 7 * 2:
        text = f"{hours // 24} days"
    elif hours < 24 * 30 * 2:
        text = f"{hours // 24 // 7} weeks"
    elif hours < 24 * 365 * 2:
        text = f"{hours // 24 // 30} months"
    else:
        text = f"{int(delta.total_seconds() / 3600 / 24 / 365)} years"
    return f"{text} ago"


def parse_time(text: str) -> dt.datetime:
    """An RFC 3339 time (nanoseconds allowed) as an aware datetime."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise UsageError(f"invalid timestamp {text!r}")
    head, frac, zone = match.groups()
    zone = "+00:00" if zone in (None, "Z", "z") else zone
    return dt.datetime.fromisoformat(f"{head}{(frac or '')[:7]}{zone}")


def ago(stamp: str | None, *, suffix: str = " ago") -> str:
    """An RFC 3339 time as docker words it: ``3 minutes ago`` (or without ``suffix``)."""
    if not stamp or stamp.startswith("0001"):
        return ""
    try:
        text = human_duration(dt.datetime.now(dt.UTC) - parse_time(stamp))
    except UsageError:
        return ""
    return text.removesuffix(" ago") + suffix


def truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def each_ref(refs: Iterable[str], action: Callable[[str], object]) -> int:
    """Run ``action(ref)`` for every ref, printing errors and going on (like docker); the
    exit status of the last error, else 0."""
    status = 0
    for ref in refs:
        try:
            action(ref)
        except PydockError as exc:
            print(f"pydock: error: {exc}", file=sys.stderr)
            status = exc.exit_code or 1
    return status
