"""The zygote factory: a small process beside the monitor that clones zygotes for it.

A zygote (a container PID 1 cloned ahead of time, launch.Zygote) is a copy of the process
that clones it, and everything that copy costs grows with that process's memory: the
clone copies its page tables, each page the zygote writes takes a copy-on-write fault, and
the workload's exec tears the copy down while the start waits.  So zygotes are not cloned
by the monitor (~14 MiB of anonymous memory once it serves) but by this process, started
with ``python -S`` and importing only child.py and the few small modules it needs (~4 MiB;
see child.py's docstring).  Measured here, six alternating pairs of a fresh-container
loop: 0.9 to 4.2 ms less CPU per container (2.4 on average), and the monitor never stands
still for a clone.

It clones with CLONE_PARENT, which makes each zygote a child of the monitor (reaped and
signalled like any container PID 1), and hands the zygote's socket over by SCM_RIGHTS.
It dies with the monitor (PR_SET_PDEATHSIG).

It runs, and its zygotes prepare, under SCHED_IDLE: on a 2-core machine the next zygote's
clone and setup (~3 ms of CPU) overlapped the current start and stole its CPU.  A zygote
gets the normal policy back when the monitor hands it a plan (launch.Zygote.launch), and
the factory while a start waits for it.  Measured here, in 13 of 14 alternating pairs
of the fresh-container loop the median was lower with it (by 0.1 to 1.7 ms).

Messages (SOCK_SEQPACKET): two bytes, new_net and join_net, ask for a zygote; the answer is
its pid, with its socket.  (Execs are still forked by the monitor: through the factory, the
extra hop cost more than the copy-on-write faults it saved, 8.2 against 7.3 ms per exec.)
"""

from __future__ import annotations

import _signal
import _socket
import gc
import os
import sys

from . import caps
from . import syscalls as sc
from .child import CONTAINER_FLAGS, zygote_main
from .fdpass import recv_fds, send_fds

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .launch import Zygote

_BOOT = "from pydock.backends.native.factory import main; main()"


class FactoryGone(Exception):
    """The factory exited (it never should); the monitor then clones by itself."""


class Factory:
    """The monitor's end.  Zygotes are asked for ahead and received when the socket is
    readable (at most one request outstanding: ``pending`` says of which network kind).
    ``ready`` turns true with the first zygote received: until then (the factory is
    still starting, ~30 ms) a start does not wait for one."""

    def __init__(self, stage: bytes) -> None:
        import socket  # (the monitor's side: loaded there already)
        self.stage = stage
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        os.set_inheritable(theirs.fileno(), True)
        try:
            # -P: nothing from the working directory; the environment is the monitor's
            # (PYTHONPATH finds pydock, PYTHONPYCACHEPREFIX keeps its bytecode).
            self.pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-S", "-P", "-c", _BOOT, str(theirs.fileno()),
                 os.fsdecode(stage), str(os.getpid())],
                os.environ)
        finally:
            theirs.close()
        self.sock = ours
        self.pending: tuple[bool, bool] | None = None  # (new_net, join_net) asked for
        self.ready = False

    def request(self, *, new_net: bool, join_net: bool) -> None:
        """Ask for a zygote (no-op while one is on its way)."""
        if self.pending is None:
            self._send(bytes([new_net, join_net]))
            self.pending = (new_net, join_net)

    def receive(self, timeout: float | None = None) -> Zygote | None:
        """The zygote asked for, or None when ``timeout`` passes first (it is received
        later).  Raises FactoryGone.  A start waiting for it (``timeout``) lifts the
        factory out of SCHED_IDLE meanwhile: other work must not hold it up then."""
        if self.pending is None:
            return None
        if timeout:
            _set_policy(self.pid, os.SCHED_OTHER)
        try:
            answer = self._recv(timeout)
        finally:
            if timeout:
                _set_policy(self.pid, os.SCHED_IDLE)
        if answer is None:
            return None
        self.ready = True
        return self._zygote(answer)

    def close(self) -> None:
        """End the factory (the monitor reaps it with its other children)."""
        self.sock.close()
        if self.pid:
            try:
                os.kill(self.pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.pid = 0

    def _zygote(self, answer: tuple[bytes, list[int]]) -> Zygote:
        import socket

        from .launch import Zygote
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
            data, fds = recv_fds(self.sock, 256, 1)
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


def main() -> None:
    """The factory process (argv: socket fd, stage dir, the monitor's pid); never returns."""
    try:
        fd, stage, monitor = int(sys.argv[1]), os.fsencode(sys.argv[2]), int(sys.argv[3])
        sc.prctl(sc.PR_SET_PDEATHSIG, _signal.SIGKILL)
        if os.getppid() != monitor:  # it died before the line above
            os._exit(0)
        sc.set_process_name(b"pydock-factory")
        _set_policy(0, os.SCHED_IDLE)
        _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # a Ctrl-C is the client's to handle
        os.set_inheritable(fd, False)
        os.closerange(3, fd)
        os.closerange(fd + 1, 1 << 20)
        sock = _socket.socket(fileno=fd)
        caps.default_sets()  # computed once here, not in every zygote
        gc.collect()
        gc.freeze()
        gc.disable()  # a collection would write to every tracked object's page
        while True:
            data = sock.recv(16)
            if len(data) != 2:  # the monitor closed its end
                os._exit(0)
            _zygote(sock, stage, new_net=bool(data[0]), join_net=bool(data[1]))
    except BaseException as exc:  # noqa: BLE001 - report, never a traceback to nobody
        try:
            os.write(2, f"pydock-factory: {exc!r}\n".encode())
        finally:
            os._exit(1)


def _set_policy(pid: int, policy: int) -> None:
    try:
        os.sched_setscheduler(pid, policy, os.sched_param(0))
    except OSError:  # gone, or a kernel without SCHED_IDLE: only slower
        pass


def _zygote(sock: _socket.socket, stage: bytes, *, new_net: bool, join_net: bool) -> None:
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    flags = CONTAINER_FLAGS | sc.CLONE_PARENT
    if new_net and not join_net:
        flags |= sc.CLONE_NEWNET
    pid = sc.clone3(flags)
    if pid == 0:
        ours.close()
        sock.close()
        zygote_main(theirs.detach(), stage, new_net and not join_net, join_net)
    theirs.close()
    send_fds(sock, b"%d" % pid, [ours.fileno()])
    ours.close()
