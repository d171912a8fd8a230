"""/etc/hosts of networked containers: their own addresses, their peers', ``--add-host``.

No DNS server runs: name resolution between containers is the hosts file.  On a user
network a container's file lists every other container on its networks by name, aliases
and hostname, as Docker's embedded DNS would answer; on the default ``bridge`` network it
lists only the container itself (Docker's default bridge resolves no names either).  When
a container joins or leaves a user network, the files of the running containers on it are
rewritten in place (the file is bind-mounted, so its inode must stay).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from .launch import DEFAULT_HOSTS


def line(ip: str, names: Iterable[str]) -> str:
    seen: list[str] = []
    for n in names:
        if n and n not in seen:
            seen.append(n)
    return f"{ip}\t{' '.join(seen)}\n"


def hosts_text(*, own: Sequence[tuple[str, Sequence[str]]],
               peers: Sequence[tuple[str, Sequence[str]]],
               extra: Sequence[tuple[str, str]]) -> str:
    """The file: localhost lines, ``--add-host`` entries, own addresses, then peers."""
    text = DEFAULT_HOSTS
    text += "".join(f"{ip}\t{host}\n" for host, ip in extra)
    text += "".join(line(ip, names) for ip, names in own)
    text += "".join(line(ip, names) for ip, names in sorted(peers))
    return text


def write_in_place(path: str, text: str) -> None:
    """Rewrite ``path`` keeping its inode (a bind mount of it shows the new content)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return  # the container is gone meanwhile
    try:
        data = text.encode()
        os.ftruncate(fd, 0)
        os.write(fd, data)
    finally:
        os.close(fd)


def resolve_extra(extra: Sequence[tuple[str, str]], host_gateway: str | None
                  ) -> list[tuple[str, str]]:
    """``--add-host`` entries with ``host-gateway`` replaced (dropped when unknown)."""
    out = []
    for host, ip in extra:
        if ip == "host-gateway":
            if host_gateway is None:
                continue
            ip = host_gateway
        out.append((host, ip))
    return out
