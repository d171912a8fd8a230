"""Per-container cgroups: limits, membership, OOM detection and kill, on v1 hybrid and v2 hosts.

Each container gets ``pydock-<id12>`` below this process's own cgroup: in the v2 (unified)
hierarchy always (membership, ``cgroup.kill``), and in the v1 memory, pids and cpu hierarchies
when a limit asks for them (hybrid hosts).  On v2-only hosts the limits go in the one node.
"""

from __future__ import annotations

import errno
import functools
import os
import time
from collections.abc import Callable

ROOT = "/sys/fs/cgroup"


@functools.lru_cache(maxsize=1)
def _own_paths() -> dict[str, str]:
    """Controller (``""`` for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                out[c] = path
    return out


def unified_mount() -> str | None:
    """Where the v2 hierarchy is mounted: /sys/fs/cgroup (v2-only) or .../unified (hybrid)."""
    if os.path.exists(f"{ROOT}/cgroup.controllers"):
        return ROOT
    if os.path.exists(f"{ROOT}/unified/cgroup.procs"):
        return f"{ROOT}/unified"
    return None


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class Cgroup:
    """The cgroup directories of one container (created by ``create``).  A plain class:
    the monitor loads no dataclasses (see state.LaunchSpec)."""

    def __init__(self, paths: list[str] | None = None, memory_path: str | None = None,
                 v2: bool = False, unified_path: str | None = None) -> None:
        self.paths: list[str] = paths or []
        self.memory_path = memory_path
        self.v2 = v2
        self.unified_path = unified_path  # the node in the v2 hierarchy (clone into it)

    @classmethod
    def create(cls, name: str, *, memory: int | None = None, pids: int | None = None,
               cpus: float | None = None) -> Cgroup:
        """Make the container's cgroups (the v2 node to clone into, v1 nodes for limits)."""
        own = _own_paths()
        cg = cls()
        try:
            unified = unified_mount()
            if unified:
                path = os.path.join(unified + own.get("", "/"), name)
                os.mkdir(path)
                cg.paths.append(path)
                cg.unified_path = path
            if unified == ROOT:
                cg.v2 = True
                cg.memory_path = cg.unified_path
                cg._limits_v2(path, memory, pids, cpus)
                return cg
            wanted = {"memory": memory is not None, "pids": pids is not None,
                      "cpu": cpus is not None}
            for controller, needed in wanted.items():
                if not needed:
                    continue
                base = f"{ROOT}/{controller}{own.get(controller, '/')}"
                if not os.path.isdir(base):
                    base = f"{ROOT}/cpu,cpuacct{own.get(controller, '/')}"
                path = os.path.join(base, name)
                os.mkdir(path)
                cg.paths.append(path)
                if controller == "memory":
                    cg.memory_path = path
                    _write(f"{path}/memory.limit_in_bytes", str(memory))
                    if os.path.exists(f"{path}/memory.memsw.limit_in_bytes"):
                        _write(f"{path}/memory.memsw.limit_in_bytes", str(memory))
                elif controller == "pids":
                    _write(f"{path}/pids.max", str(pids))
                elif controller == "cpu" and cpus is not None:
                    _write(f"{path}/cpu.cfs_period_us", "100000")
                    _write(f"{path}/cpu.cfs_quota_us", str(int(cpus * 100000)))
        except BaseException:
            cg.remove()
            raise
        return cg

    def _limits_v2(self, path: str, memory: int | None, pids: int | None,
                   cpus: float | None) -> None:
        parent = os.path.dirname(path)
        needed = [c for c, v in (("memory", memory), ("pids", pids), ("cpu", cpus)) if v]
        if needed:
            try:
                _write(f"{parent}/cgroup.subtree_control", " ".join(f"+{c}" for c in needed))
            except OSError as exc:
                raise OSError(exc.errno, f"cannot enable cgroup controllers {needed} in "
                              f"{parent}: {exc.strerror} (run under a delegated cgroup)") from None
        if memory is not None:
            _write(f"{path}/memory.max", str(memory))
            if os.path.exists(f"{path}/memory.swap.max"):
                _write(f"{path}/memory.swap.max", "0")
            _write(f"{path}/memory.oom.group", "1")
        if pids is not None:
            _write(f"{path}/pids.max", str(pids))
        if cpus is not None:
            _write(f"{path}/cpu.max", f"{int(cpus * 100000)} 100000")

    def procs_files(self, *, skip_unified: bool = False) -> list[int]:
        """Open cgroup.procs of each directory for writing (the child writes "0" to join);
        ``skip_unified`` when the process is cloned straight into the v2 node."""
        return [os.open(f"{p}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for p in self.paths
                if not (skip_unified and p == self.unified_path)]

    def open_unified(self) -> int | None:
        """An fd of the v2 node for CLONE_INTO_CGROUP (None without a v2 hierarchy)."""
        if self.unified_path is None:
            return None
        return os.open(self.unified_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def oom_killed(self) -> bool:
        """Whether the OOM killer killed a process in this cgroup."""
        if self.memory_path is None:
            return False
        name = "memory.events" if self.v2 else "memory.oom_control"
        try:
            with open(f"{self.memory_path}/{name}") as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and int(value) > 0:
                        return True
        except OSError:
            pass
        return False

    def kill(self) -> None:
        """SIGKILL every process in the cgroup (cgroup.kill where the kernel has it)."""
        for path in self.paths:
            if os.path.exists(f"{path}/cgroup.kill"):
                try:
                    _write(f"{path}/cgroup.kill", "1")
                    return
                except OSError:
                    pass

    def remove(self) -> None:
        """Remove the directories (retrying briefly while the kernel drains them)."""
        for path in reversed(self.paths):
            remove_dir(path)
        self.paths = []

    def try_remove(self) -> bool:
        """Remove what can be removed now, without waiting; True when all is gone."""
        left = []
        for path in reversed(self.paths):
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    continue
                left.append(path)
        self.paths = list(reversed(left))
        return not left

    def to_json(self) -> dict[str, object]:
        return {"paths": self.paths, "memory_path": self.memory_path, "v2": self.v2,
                "unified_path": self.unified_path}

    @classmethod
    def from_json(cls, doc: dict[str, object] | None) -> Cgroup:
        doc = doc or {}
        return cls(paths=list(doc.get("paths") or []),  # type: ignore[call-overload]
                   memory_path=doc.get("memory_path"),  # type: ignore[arg-type]
                   v2=bool(doc.get("v2")),
                   unified_path=doc.get("unified_path"))  # type: ignore[arg-type]


def stale_spares(prefix: str, alive: Callable[[int], bool]) -> list[str]:
    """Cgroups ``<prefix>z<pid>-<n>`` left by monitors that are gone (earlier versions made
    such spare nodes for pre-cloned containers; the sweep still clears them)."""
    unified = unified_mount()
    if unified is None:
        return []
    base = unified + _own_paths().get("", "/")
    out = []
    try:
        names = os.listdir(base)
    except OSError:
        return []
    for name in names:
        if name.startswith(prefix + "z"):
            pid = name[len(prefix) + 1:].split("-")[0]
            if pid.isdigit() and not alive(int(pid)):
                out.append(os.path.join(base, name))
    return out


def remove_dir(path: str) -> None:
    """rmdir a cgroup, retrying for up to 2 s while its last processes exit."""
    for _ in range(200):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return
            time.sleep(0.001 if _ < 20 else 0.01)
