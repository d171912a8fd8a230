"""Linux capability numbers and Docker's default capability set."""

from __future__ import annotations

CAPS = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
    "SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10,
    "NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15,
    "SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20,
    "SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
    "SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30,
    "SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
    "BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}

# moby's oci/caps/defaults.go: the set a container gets unless --cap-add/--cap-drop.
DOCKER_DEFAULT = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)


def last_cap() -> int:
    """The highest capability number this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return max(CAPS.values())


_default_sets: list[tuple[int, tuple[int, ...]]] = []  # (no functools: see factory.py)


def default_sets() -> tuple[int, tuple[int, ...]]:
    """Docker's default set as a mask, and the capabilities of this kernel outside it (the
    ones a container drops from its bounding set)."""
    if not _default_sets:
        keep = mask(DOCKER_DEFAULT)
        _default_sets.append((keep, tuple(c for c in range(last_cap() + 1)
                                          if not keep & (1 << c))))
    return _default_sets[0]


def mask(names: tuple[str, ...] | list[str]) -> int:
    """The bit mask of the named capabilities."""
    bits = 0
    for name in names:
        bits |= 1 << CAPS[name]
    return bits
