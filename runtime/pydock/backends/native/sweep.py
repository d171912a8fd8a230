"""Clean up after monitors that died (SIGKILL, crash): settle state, remove cgroups."""

from __future__ import annotations

import os
from typing import Any

from ...errors import PydockError
from .cgroups import Cgroup
from .state import ContainerDir, ContainerTable


def settle(cdir: ContainerDir, state: dict[str, Any]) -> dict[str, Any]:
    """A container whose monitor is gone died with it: record that, free its cgroups."""
    cg = Cgroup.from_json(state.get("cgroup"))
    cg.kill()
    cg.remove()
    from .monitor import now
    state = cdir.write_state(status="exited", exit_code=137, pid=0, cgroup=None,
                             finished_at=now(), error="its monitor process died")
    if cdir.spec.auto_remove:
        ContainerTable(cdir.path.parent).delete(cdir)
    return state


def sweep(table: ContainerTable) -> list[str]:
    """Settle every container of the store whose monitor died; returns their ids."""
    from .monitor import proc_start_time
    swept = []
    for cid in table.ids():
        cdir = ContainerDir(table.root / cid)
        try:
            state = cdir.read_state()
            if state.get("status") != "running":
                continue
            mon = state.get("monitor_pid")
            if mon and proc_start_time(int(mon)) == state.get("monitor_start"):
                continue
            settle(cdir, state)
            swept.append(cid)
        except (PydockError, OSError, ValueError):
            continue
    for leftover in table.root.glob(".*.rm") if table.root.exists() else []:
        import shutil
        shutil.rmtree(leftover, ignore_errors=True)
    _ = os
    return swept
