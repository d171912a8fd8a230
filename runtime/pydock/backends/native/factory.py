"""The factory: a process beside the monitor that clones zygotes for it.

A fork shares every page of the forking process copy-on-write, and a Python process then
takes a page fault for each page it writes afterwards: measured here, 22 us of JSON work
took 520 us right after a fork.  A monitor that forked each zygote itself paid that on
every request it served next, and stood still for the ~1.5 ms of the clone.  So the
monitor forks once, at its start, this factory; the factory clones with CLONE_PARENT,
which makes each zygote a child of the monitor (reaped and signalled like any container
PID 1), and hands the zygote's socket over by SCM_RIGHTS.  The factory writes almost
nothing of its memory between clones, so its own copies stay cheap.

(Execs are still forked by the monitor: through the factory, the extra hop cost more than
the copy-on-write faults it saved, measured 8.2 against 7.3 ms per exec.)

Messages (SOCK_SEQPACKET): two bytes, new_net and join_net, ask for a zygote; the answer is
its pid, with its socket.
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


class FactoryGone(Exception):
    """The factory exited (it never should); the monitor then clones by itself."""


class Factory:
    """The monitor's end.  Zygotes are asked for ahead and received when the socket is
    readable (at most one request outstanding: ``pending`` says of which network kind)."""

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

    def request(self, *, new_net: bool, join_net: bool) -> None:
        """Ask for a zygote (no-op while one is on its way)."""
        if self.pending is None:
            self._send(bytes([new_net, join_net]))
            self.pending = (new_net, join_net)

    def receive(self, timeout: float | None = None) -> Zygote | None:
        """The zygote asked for, or None when ``timeout`` passes first (it is received
        later).  Raises FactoryGone."""
        if self.pending is None:
            return None
        answer = self._recv(timeout)
        if answer is None:
            return None
        return self._zygote(answer)

    def close(self) -> None:
        """End the factory (the monitor reaps it with its other children)."""
        self.sock.close()
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.pid = 0

    def _zygote(self, answer: tuple[bytes, list[int]]) -> Zygote:
        data, fds = answer
        assert self.pending is not None and len(fds) == 1
        new_net, join_net = self.pending
        self.pending = None
        # Received fds are inheritable: this one must never reach a process the monitor
        # clones itself (an exec, a container without a zygote), which could then send a
        # waiting zygote (root, host mounts) a plan of its own.
        os.set_inheritable(fds[0], False)
        return Zygote(int(data), socket.socket(fileno=fds[0]), new_net=new_net,
                      join_net=join_net, stage=self.stage)

    def _send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError:
            raise FactoryGone from None

    def _recv(self, timeout: float | None) -> tuple[bytes, list[int]] | None:
        self.sock.settimeout(timeout)
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, 256, 1)
        except TimeoutError:
            return None
        except OSError:
            data, fds = b"", []
        finally:
            self.sock.settimeout(None)
        if not data:
            for fd in fds:
                os.close(fd)
            raise FactoryGone
        return data, fds


def _serve(sock: socket.socket, stage: bytes) -> None:
    """The factory's loop; never returns."""
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
            if len(data) != 2:  # the monitor closed its end
                os._exit(0)
            _zygote(sock, stage, new_net=bool(data[0]), join_net=bool(data[1]))
    except BaseException as exc:  # noqa: BLE001 - never return into the monitor's code
        try:
            os.write(2, f"pydock-factory: {exc!r}\n".encode())
        finally:
            os._exit(1)


def _zygote(sock: socket.socket, stage: bytes, *, new_net: bool, join_net: bool) -> None:
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
    socket.send_fds(sock, [b"%d" % pid], [ours.fileno()])
    ours.close()
