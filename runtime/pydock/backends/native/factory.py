"""The zygote factory: a process beside the monitor that clones zygotes for it.

A fork shares every page of the forking process copy-on-write, and a Python process then
takes a page fault for each page it writes afterwards: measured here, 22 us of JSON work
took 520 us right after a fork.  A monitor that forked each zygote itself paid that on every
request it served next (and stood still for the ~2 ms of the clone).  So the monitor forks
once, at its start, this factory; the factory clones the zygotes with CLONE_PARENT, which
makes each one a child of the monitor (reaped and signalled like any container PID 1), and
hands the zygote's socket over by SCM_RIGHTS.  The factory writes almost nothing of its
memory between clones, so its own copies stay cheap.
"""

from __future__ import annotations

import gc
import os
import signal
import socket

from . import caps
from . import syscalls as sc
from .child import zygote_main
from .launch import CONTAINER_FLAGS, MAX_OPEN_FDS, Zygote


class ZygoteFactory:
    """The monitor's end: ask for a zygote, receive it when the factory's socket is readable.

    At most one request is outstanding (``pending`` says of which network kind).
    """

    def __init__(self, stage: bytes) -> None:
        self.stage = stage
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            _serve(theirs, stage)
        theirs.close()
        self.pid, self.sock = pid, ours
        self.pending: tuple[bool, bool] | None = None  # (new_net, join_net) asked for

    def fileno(self) -> int:
        return self.sock.fileno()

    def request(self, *, new_net: bool, join_net: bool) -> None:
        """Ask for a zygote (no-op while one is on its way)."""
        if self.pending is None:
            self.sock.send(bytes([new_net, join_net]))
            self.pending = (new_net, join_net)

    def receive(self, timeout: float | None = None) -> Zygote | None:
        """The zygote asked for; None if the factory is gone (then use no zygotes) or,
        with ``timeout``, not there in time (it is still received later)."""
        if self.pending is None:
            return None
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, 64, 1)
        except TimeoutError:
            return None
        except OSError:
            data, fds = b"", []
        finally:
            self.sock.settimeout(None)
        if not data or not fds:
            for fd in fds:
                os.close(fd)
            raise FactoryGone
        new_net, join_net = self.pending
        self.pending = None
        return Zygote.adopt(int(data), socket.socket(fileno=fds[0]), new_net=new_net,
                            join_net=join_net, stage=self.stage)

    def close(self) -> None:
        """End the factory (the monitor reaps it with its other children)."""
        self.sock.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class FactoryGone(Exception):
    """The factory exited (it never should); the monitor then clones by itself."""


def _serve(sock: socket.socket, stage: bytes) -> None:
    """The factory's loop: one zygote per request byte pair; never returns."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        keep = sock.fileno()
        os.closerange(3, keep)
        os.closerange(keep + 1, MAX_OPEN_FDS)
        gc.disable()  # a collection would write to every tracked object's page
        caps.default_sets()  # computed once here, not in every zygote
        while True:
            data = sock.recv(16)
            if len(data) < 2:
                os._exit(0)
            new_net, join_net = bool(data[0]), bool(data[1])
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            flags = CONTAINER_FLAGS | sc.CLONE_PARENT
            if new_net and not join_net:
                flags |= sc.CLONE_NEWNET
            pid = sc.clone3(flags)
            if pid == 0:
                ours.close()
                sock.close()
                zygote_main(theirs.detach(), stage, new_net and not join_net, join_net)
            theirs.close()
            socket.send_fds(sock, [str(pid).encode()], [ours.fileno()])
            ours.close()
    except BaseException as exc:  # noqa: BLE001 - never return into the monitor's code
        try:
            os.write(2, f"pydock-zygote-factory: {exc!r}\n".encode())
        finally:
            os._exit(1)
