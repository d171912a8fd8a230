"""File descriptors over Unix sockets (SCM_RIGHTS) with the C ``_socket`` module alone.

``socket.send_fds``/``recv_fds`` do the same, but the ``socket`` module brings ``enum``,
``selectors`` and ``functools`` with it (and ``array`` collections), and the zygote factory
(factory.py) must stay small.  These accept ``socket.socket`` objects too (a subclass of ``_socket.socket``).
"""

from __future__ import annotations

import _socket
import struct

_INT_SIZE = struct.calcsize("i")


def send_fds(sock: _socket.socket, data: bytes, fds: list[int]) -> None:
    """Send ``data`` with ``fds`` attached (none: a plain message)."""
    if fds:
        sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                               struct.pack(f"{len(fds)}i", *fds))])
    else:
        sock.send(data)


def recv_fds(sock: _socket.socket, bufsize: int, maxfds: int) -> tuple[bytes, list[int]]:
    """One message and the file descriptors that came with it (b"" at end of stream)."""
    data, ancdata, _flags, _addr = sock.recvmsg(bufsize, _socket.CMSG_SPACE(maxfds * _INT_SIZE))
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds += struct.unpack(f"{len(payload) // _INT_SIZE}i",
                                 payload[:len(payload) - len(payload) % _INT_SIZE])
    return data, fds
