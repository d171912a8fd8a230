"""Thin ctypes wrappers for the Linux syscalls Python 3.11 lacks (clone, setns, mount, ...)."""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_PARENT = 0x00008000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_MOVE = 0x2000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_STRICTATIME = 0x1000000
MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414
TIOCGWINSZ = 0x5413
TIOCSPTLCK = 0x40045431
TIOCGPTN = 0x80045430

_SYSCALLS = {
    "x86_64": {"clone": 56, "pivot_root": 155, "capset": 126},
    "aarch64": {"clone": 220, "pivot_root": 41, "capset": 91},
}
_NR = _SYSCALLS.get(os.uname().machine, _SYSCALLS["x86_64"])


def _check(result: int, what: str, detail: str = "") -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}" + (f": {detail}" if detail else ""))
    return result


def clone(flags: int) -> int:
    """Raw ``clone(flags | SIGCHLD)`` like fork: 0 in the child, its pid in the parent.

    At-fork handlers do not run: call it only from a single-threaded process.
    """
    return _check(_libc.syscall(_NR["clone"], ctypes.c_ulong(flags | 17), 0, 0, 0, 0), "clone")


CLONE_INTO_CGROUP = 0x200000000


class _CloneArgs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size",
        "tls", "set_tid", "set_tid_size", "cgroup")]


def clone3(flags: int, *, cgroup_fd: int | None = None) -> int:
    """``clone3`` like fork, optionally straight into a v2 cgroup (CLONE_INTO_CGROUP).

    Starting a process in its cgroup avoids a migration (a write to cgroup.procs), which
    waits for an RCU grace period: ~2 ms here.  Same caveats as clone().
    """
    # With CLONE_PARENT the child signals our parent as we do, and clone3 wants 0 here.
    args = _CloneArgs(flags=flags, exit_signal=0 if flags & CLONE_PARENT else 17)
    if cgroup_fd is not None:
        args.flags |= CLONE_INTO_CGROUP
        args.cgroup = cgroup_fd
    return _check(_libc.syscall(435, ctypes.byref(args), ctypes.sizeof(args)), "clone3")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: bytes | None, target: bytes, fstype: bytes | None, flags: int = 0,
          data: bytes | None = None) -> None:
    result = _libc.mount(source, target, fstype, ctypes.c_ulong(flags), data)
    _check(result, "mount", target.decode(errors="replace"))


def umount2(target: bytes, flags: int = 0) -> None:
    _check(_libc.umount2(target, ctypes.c_int(flags)), "umount", target.decode(errors="replace"))


def pivot_root(new_root: bytes, put_old: bytes) -> None:
    _check(_libc.syscall(_NR["pivot_root"], new_root, put_old), "pivot_root")


def sethostname(name: bytes) -> None:
    _check(_libc.sethostname(name, ctypes.c_size_t(len(name))), "sethostname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(
        _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                    ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)),
        "prctl",
    )


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets (64-bit masks, _LINUX_CAPABILITY_VERSION_3)."""
    header = _CapHeader(0x20080522, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.syscall(_NR["capset"], ctypes.byref(header), ctypes.byref(data)), "capset")


def set_process_name(name: bytes) -> None:
    """PR_SET_NAME: the name ``ps`` and /proc/PID/comm show (15 bytes at most)."""
    buf = ctypes.create_string_buffer(name[:15])
    _libc.prctl(ctypes.c_int(15), buf, 0, 0, 0)
