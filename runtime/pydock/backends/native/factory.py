"""The factory: a process beside the monitor that clones zygotes and exec processes for it.

A fork shares every page of the forking process copy-on-write, and a Python process then
takes a page fault for each page it writes afterwards: measured here, 22 us of JSON work
took 520 us right after a fork.  A monitor that forked each zygote (and each exec) itself
paid that on every request it served next, and stood still for the ~1.5 ms of the clone.
So the monitor forks once, at its start, this factory; the factory clones with
CLONE_PARENT, which makes each new process a child of the monitor (reaped and signalled
like any container PID 1 or exec), and hands a zygote's socket over by SCM_RIGHTS.  The
factory writes almost nothing of its memory between clones, so its own copies stay cheap.

Messages (SOCK_SEQPACKET): ``Z`` + new_net + join_net asks for a zygote, answered by ``Z``
+ its pid with its socket; ``E`` + a pickled exec job with its fds asks for an exec
process, answered by ``E`` + its pid (or ``X`` + an error).  Answers come in the order of
the requests.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import socket
from collections import deque

from . import caps
from . import syscalls as sc
from .child import Workload, exec_main, zygote_main
from .launch import CONTAINER_FLAGS, MAX_OPEN_FDS, Zygote


class FactoryGone(Exception):
    """The factory exited (it never should); the monitor then clones by itself."""


class Factory:
    """The monitor's end.  Zygotes are asked for ahead and received when the socket is
    readable (at most one request outstanding: ``pending`` says of which network kind);
    an exec process is asked for and waited for."""

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
        self.arrived: deque[Zygote] = deque()  # zygotes received while awaiting an exec

    def request(self, *, new_net: bool, join_net: bool) -> None:
        """Ask for a zygote (no-op while one is on its way)."""
        if self.pending is None:
            self._send(b"Z" + bytes([new_net, join_net]))
            self.pending = (new_net, join_net)

    def receive(self, timeout: float | None = None) -> Zygote | None:
        """The zygote asked for, or None when ``timeout`` passes first (it is received
        later).  Raises FactoryGone."""
        if self.arrived:
            return self.arrived.popleft()
        if self.pending is None:
            return None
        answer = self._recv(timeout)
        if answer is None:
            return None
        return self._zygote(answer)

    def exec(self, pid1: int, ns_fds: list[int], cgroup_fds: list[int],
             stdio: tuple[int, int, int], workload: Workload, errfd: int,
             cgroup_fd: int | None) -> int:
        """Clone (into ``cgroup_fd``'s cgroup) a process that runs child.exec_main; its pid.
        The caller keeps and closes the fds.  Raises FactoryGone."""
        extra = [fd for fd in (cgroup_fd, workload.console_fd) if fd is not None and fd >= 0]
        job = (pid1, len(ns_fds), len(cgroup_fds), cgroup_fd is not None, workload)
        self._send(b"E" + pickle.dumps(job), [*ns_fds, *cgroup_fds, *stdio, errfd, *extra])
        while True:
            answer = self._recv(None)
            assert answer is not None
            data, fds = answer
            if data[:1] == b"Z":
                self.arrived.append(self._zygote(answer))
                continue
            if data[:1] == b"E":
                return int(data[1:])
            raise OSError(data[1:].decode(errors="replace"))

    def close(self) -> None:
        """End the factory (the monitor reaps it with its other children)."""
        for zygote in self.arrived:
            zygote.discard()
        self.arrived.clear()
        self.sock.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _zygote(self, answer: tuple[bytes, list[int]]) -> Zygote:
        data, fds = answer
        assert self.pending is not None and data[:1] == b"Z" and len(fds) == 1
        new_net, join_net = self.pending
        self.pending = None
        return Zygote.adopt(int(data[1:]), socket.socket(fileno=fds[0]), new_net=new_net,
                            join_net=join_net, stage=self.stage)

    def _send(self, data: bytes, fds: list[int] | None = None) -> None:
        try:
            if fds:
                socket.send_fds(self.sock, [data], fds)
            else:
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
            data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 64)
            if not data:
                os._exit(0)
            if data[:1] == b"Z":
                _zygote(sock, stage, new_net=bool(data[1]), join_net=bool(data[2]))
            else:
                _exec(sock, pickle.loads(data[1:]), fds)
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
    socket.send_fds(sock, [b"Z%d" % pid], [ours.fileno()])
    ours.close()


def _exec(sock: socket.socket, job: tuple[int, int, int, bool, Workload],
          fds: list[int]) -> None:
    pid1, n_ns, n_cg, has_cgroup_fd, workload = job
    for fd in fds:  # received inheritable; none may reach the command by accident
        os.set_inheritable(fd, False)
    ns_fds, cg_fds = fds[:n_ns], fds[n_ns:n_ns + n_cg]
    rest = fds[n_ns + n_cg:]
    stdio, errfd = (rest[0], rest[1], rest[2]), rest[3]
    cgroup_fd = rest[4] if has_cgroup_fd else None
    if workload.console_fd >= 0:
        workload.console_fd = rest[-1]
    try:
        pid = sc.clone3(sc.CLONE_PARENT, cgroup_fd=cgroup_fd)
    except OSError as exc:
        sock.send(b"X" + str(exc).encode())
    else:
        if pid == 0:
            sock.close()
            if cgroup_fd is not None:
                os.close(cgroup_fd)
            exec_main(pid1, ns_fds, cg_fds, stdio, workload, errfd)
        sock.send(b"E%d" % pid)
    finally:
        for fd in fds:
            os.close(fd)
