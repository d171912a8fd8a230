"""Processes told apart from a later process with the same pid: pid plus start time."""

from __future__ import annotations

import os


def proc_start_time(pid: int) -> int | None:
    """Start time of a live process (clock ticks since boot); None when it is gone (or a
    zombie), or there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):  # dead, not yet reaped: gone for our purposes
        return None
    return int(fields[19])


def process_label(pid: int | None = None) -> str:
    """``pid:start time`` of a process (this one by default): how sweeps recognise the
    leftovers of a process that is gone (a SIGKILLed pytest)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{proc_start_time(pid)}"
