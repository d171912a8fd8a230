"""Clean up after monitors that died (SIGKILL, crash) and stores that were deleted."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ...errors import PydockError
from .cgroups import Cgroup, remove_dir, stale_spares
from .state import ContainerDir, ContainerTable, cgroup_prefix, orphaned_run_dirs


def settle(cdir: ContainerDir, state: dict[str, Any]) -> dict[str, Any]:
    """A container whose monitor is gone died with it: record that, free its cgroups."""
    from .state import now
    cg = Cgroup.from_json(state.get("cgroup"))
    cg.kill()
    cg.remove()
    state = cdir.write_state(status="exited", exit_code=137, pid=0, cgroup=None,
                             finished_at=now(), error="its monitor process died")
    # --rm containers, and test containers (label pydock.session) of a killed test run,
    # are deleted: nobody is left to do it.
    if cdir.spec.auto_remove or "pydock.session" in dict(cdir.spec.labels):
        ContainerTable(cdir.path.parent).delete(cdir)
    return state


def settle_dead(table: ContainerTable) -> tuple[list[str], int]:
    """Settle the containers whose monitor died; returns (their ids, how many still run)."""
    from ...procs import proc_start_time
    swept, running = [], 0
    for cid in table.ids():
        cdir = ContainerDir(table.root / cid)
        try:
            state = cdir.read_state()
            if state.get("status") != "running":
                for path in Cgroup.from_json(state.get("cgroup")).paths:
                    if os.path.isdir(path):  # its monitor died before removing it
                        remove_dir(path)
                if _session_gone(cdir):
                    table.delete(cdir)
                    swept.append(cid)
                continue
            mon = state.get("monitor_pid")
            if mon and proc_start_time(int(mon)) == state.get("monitor_start"):
                running += 1
                continue
            settle(cdir, state)
            swept.append(cid)
        except (PydockError, OSError, ValueError):
            continue
    return swept, running


def sweep(table: ContainerTable) -> list[str]:
    """Settle dead containers of this store, free cgroups of dead monitors, delete the
    tmpfs run directories of stores that no longer exist, and sweep the networks
    (network.sweep_networks).  Returns the settled ids."""
    from ...procs import proc_start_time
    swept, _ = settle_dead(table)
    table.prune_exits()
    for spare in stale_spares(cgroup_prefix(table.root),
                              lambda pid: proc_start_time(pid) is not None):
        remove_dir(spare)
    for leftover in table.root.glob(".*.rm") if table.root.exists() else []:
        shutil.rmtree(leftover, ignore_errors=True)
    for run in orphaned_run_dirs():
        _sweep_orphan(run)
    # Addresses of dead holders, bridges of networks whose store is gone, stale rules.
    from .network import sweep_networks
    sweep_networks()
    from .network_ipam import state_dir
    if (state_dir() / "delay").is_dir():  # pydock-delay processes of dead containers
        from .faults import sweep_keepers
        sweep_keepers()
    return swept


def _sweep_orphan(run: Path) -> None:
    orphan = ContainerTable(run / "containers")
    _, running = settle_dead(orphan)
    if running == 0:
        shutil.rmtree(run, ignore_errors=True)


def _session_gone(cdir: ContainerDir) -> bool:
    """A test container (label ``pydock.session=pid:start``) whose test session is gone."""
    return session_gone(dict(cdir.spec.labels).get("pydock.session"))


def session_gone(label: str | None) -> bool:
    """Whether the test session a ``pydock.session=pid:start`` label names has ended."""
    from ...procs import proc_start_time
    if not label or ":" not in label:
        return False
    pid, _, start = label.partition(":")
    return not pid.isdigit() or str(proc_start_time(int(pid))) != start
