"""The monitor: a small single-threaded process that clones containers and watches them.

It is the parent of every container it starts: it reaps PID 1, records the exit status (and
OOM kills) in state.json, removes the cgroups, and deletes ``--rm`` containers.  Clients talk
to it over a SOCK_SEQPACKET socket (JSON messages, file descriptors by SCM_RIGHTS).

Two modes:
- session (default): serves one client (a pytest session, a foreground ``pydock run``); when
  the client goes away, even by SIGKILL, it kills the containers it started and exits.
- detach: for ``pydock run -d`` / ``pydock start``; it outlives its client and exits when its
  containers have exited.
Containers get PR_SET_PDEATHSIG=SIGKILL, so a SIGKILLed monitor takes them along; the next
``pydock`` command sweeps what it left (sweep.py).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
from pathlib import Path

from ...errors import PydockError
from ...procs import proc_start_time
from . import syscalls as sc
from .cgroups import Cgroup
from .factory import Factory, FactoryGone
from .launch import (
    Console,
    Zygote,
    discard_all,
    needs_cgroup,
    recv,
    send,
    stage_dir,
    start_container,
    start_exec,
    workload_for,
)
from .state import ContainerDir, ContainerTable, LaunchSpec, containers_root, now

ZYGOTES = 2  # pre-cloned PID 1s kept waiting: one may still be preparing when one is taken
IDLE = 0.002  # seconds without a request after which the loop deletes removed containers
TRASH_MAX = 8  # removed containers waiting for deletion, beyond which it does not wait
ZYGOTE_WAIT = 1.0  # seconds a start waits for the zygote on its way before cloning itself


def exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class Monitor:
    def __init__(self, sock: socket.socket, store_root: Path, *, detach: bool) -> None:
        self.sock: socket.socket | None = sock
        self.store_root = store_root
        self.table = ContainerTable(containers_root(store_root), store_root)
        self.detach = detach
        self.containers: dict[int, tuple[ContainerDir, Cgroup]] = {}
        self.execs: dict[int, str] = {}
        self.consoles: dict[int, int] = {}  # pty master -> log fd (detached tty containers)
        self.zygotes: list[Zygote] = []  # pre-cloned PID 1s (session mode only)
        self.factory: Factory | None = None  # clones the zygotes (session mode only)
        self.zygote_joins = True  # zygotes for bridge networks (as the last start was)
        self.start_time = proc_start_time(os.getpid())
        self.doomed: set[str] = set()  # ids to delete once reaped (background removal)
        self.trash: list[Path] = []  # directories of removed containers, deleted when idle
        self.draining: list[Cgroup] = []  # cgroups of exited containers, not empty yet
        self.stdin_holds: dict[int, int] = {}  # pid -> write end keeping a -d -i stdin open
        self.port_holds: dict[int, list[int]] = {}  # pid -> sockets reserving its host ports

    # -- requests --------------------------------------------------------------------------
    def handle(self, msg: dict[str, object], fds: list[int]) -> None:
        op = msg.get("op")
        reply_fds: list[int] = []
        console = Console(bytes.fromhex(str(msg["winsize"]))) if msg.get("tty") else None
        try:
            if op == "start":
                reply = self.start(str(msg["id"]), fds, console, bool(msg.get("netns")),
                                   int(str(msg.get("ports") or 0)), msg.get("published"))
            elif op == "exec":
                reply = self.exec(msg, fds, console)
            elif op == "remove":
                reply = self.remove(str(msg["id"]))
            elif op == "purge":
                reply = self.purge(str(msg["path"]))
            elif op == "ping":
                reply = {"ok": True, "pid": os.getpid()}
            else:
                reply = {"ok": False, "error": f"unknown request {op!r}"}
        except PydockError as exc:
            reply = {"ok": False, "error": str(exc), "exit_code": exc.exit_code}
        except OSError as exc:
            reply = {"ok": False, "error": f"{op}: {exc}", "exit_code": 125}
        finally:
            for fd in fds:
                os.close(fd)
        if console is not None and reply.get("ok"):
            try:
                master = console.receive()
            except PydockError as exc:
                reply = {"ok": False, "error": str(exc), "exit_code": 125}
            else:
                if self.detach:
                    self.drain_console(master, str(msg["id"]))
                else:
                    reply_fds.append(master)
        elif console is not None:
            console.close()
        if not msg.get("noreply"):
            self.send(reply, reply_fds)
        for fd in reply_fds:
            os.close(fd)

    def drain_console(self, master: int, cid: str) -> None:
        """No client keeps the terminal of a detached container: copy it to its log."""
        cdir = self.table.lookup(cid)
        log = os.open(cdir.stdout_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                      0o640)
        self.consoles[master] = log

    def start(self, cid: str, fds: list[int], console: Console | None,
              netns: bool = False, ports: int = 0,
              published: object = None) -> dict[str, object]:
        cdir = self.table.lookup(cid)
        port_fds = fds[len(fds) - ports:] if ports else []  # sent last; closed by handle()
        fds = fds[:len(fds) - ports]
        for fd in port_fds:  # not for the container's processes
            os.set_inheritable(fd, False)
        netns_fd = fds[-1] if netns and fds else None  # closed by handle(), like the others
        stdio = (fds[0], fds[1], fds[2]) if len(fds) - (netns_fd is not None) == 3 else None
        if cdir.launch_spec.network != "host":  # (host network containers take no zygote)
            self.zygote_joins = netns_fd is not None
        zygote = self.take_zygote(cdir.launch_spec, netns_fd is not None)
        stdin_fd = hold = None
        if stdio is None and cdir.launch_spec.stdin_open:
            # -d -i: stdin stays open (and empty) while the container runs, as with docker
            stdin_fd, hold = os.pipe2(os.O_CLOEXEC)
        try:
            pid, cgroup = start_container(cdir, self.store_root, stdio, console, zygote,
                                          stdin_fd, netns_fd)
            if hold is not None:
                self.stdin_holds[pid] = hold
                hold = None
        except PydockError as exc:
            cdir.write_state(status="created", exit_code=exc.exit_code, error=str(exc))
            raise
        finally:
            if hold is not None:
                os.close(hold)
        self.containers[pid] = (cdir, cgroup)
        if port_fds:  # held while it runs: no other process can take those host ports
            self.port_holds[pid] = [os.dup(fd) for fd in port_fds]
        cdir.write_state(status="running", pid=pid, pid_start=proc_start_time(pid),
                         ports=published or None,
                         monitor_pid=os.getpid(), monitor_start=self.start_time,
                         started_at=now(), finished_at=None, exit_code=None,
                         oom_killed=False, error="", cgroup=cgroup.to_json())
        return {"ok": True, "pid": pid}

    def take_zygote(self, spec: LaunchSpec, join_net: bool) -> Zygote | None:
        """A waiting zygote that fits this container (with none waiting, one on its way
        from the factory is waited for, unless the factory is still starting).  Zygotes
        made for the other network kind are replaced by the kind this container needed."""
        if spec.network == "host" or needs_cgroup(spec):
            return None
        if (not self.zygotes and self.factory is not None and self.factory.ready
                and self.factory.pending and self.factory.pending[1] == join_net):
            self.receive_zygote(timeout=ZYGOTE_WAIT)
        stage = stage_dir(self.store_root)
        for i, zygote in enumerate(self.zygotes):
            if zygote.fits(spec, stage, join_net):
                return self.zygotes.pop(i)
        discard_all(self.zygotes)
        self.zygotes = []
        return None

    def receive_zygote(self, timeout: float | None = None) -> None:
        assert self.factory is not None
        try:
            zygote = self.factory.receive(timeout)
        except FactoryGone:
            self.factory_gone()
            return
        if zygote is not None:
            self.zygotes.append(zygote)

    def factory_gone(self) -> None:
        print("pydock-monitor: the factory exited; cloning containers directly",
              file=sys.stderr)
        assert self.factory is not None
        self.factory.close()
        self.factory = None

    def remove(self, cid: str) -> dict[str, object]:
        """Kill a container this monitor runs and delete it once it is reaped."""
        for pid, (cdir, _) in self.containers.items():
            if cdir.id == cid:
                self.doomed.add(cid)
                try:
                    # Its teardown (the exit of its processes, the kernel's unmapping) runs
                    # at the lowest priority, behind the start of the next container.
                    os.setpriority(os.PRIO_PROCESS, pid, 19)
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return {"ok": True}
        try:  # it exited meanwhile (its exit event may be on its way to the client)
            cdir = self.table.lookup(cid)
            if cdir.read_state().get("status") != "running":
                self.table.delete(cdir)
                return {"ok": True}
        except PydockError:
            return {"ok": True}  # already gone
        return {"ok": False, "error": "not running under this monitor"}

    def purge(self, path: str) -> dict[str, object]:
        """Delete the directory of a container the client removed (ContainerTable.discard)
        at the next idle moment."""
        if not self.table.is_trash(path):
            return {"ok": False, "error": f"not a removed container's directory: {path}"}
        self.trash.append(Path(path))
        return {"ok": True}

    def exec(self, msg: dict[str, object], fds: list[int],
             console: Console | None) -> dict[str, object]:
        cdir = self.table.lookup(str(msg["id"]))
        state = cdir.read_state()
        if state.get("status") != "running":
            return {"ok": False, "error": f"container {cdir.config['name']} is not running",
                    "exit_code": 125}
        workload = workload_for(argv=list(msg["argv"]), env=list(msg["env"]),  # type: ignore
                                cwd=str(msg["cwd"]), user=str(msg["user"]),
                                tty=bool(msg.get("tty")), create_cwd=False)
        if len(fds) == 3:
            stdio = (fds[0], fds[1], fds[2])
        else:
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            fds.append(null)
            stdio = (null, null, null)
        pid = start_exec(int(state["pid"]), Cgroup.from_json(state.get("cgroup")), workload,
                         stdio, console)
        self.execs[pid] = cdir.id
        return {"ok": True, "pid": pid}

    def send(self, doc: dict[str, object], fds: list[int] | None = None) -> None:
        if self.sock is None:
            return
        try:
            send(self.sock, doc, fds)
        except OSError:
            self.client_gone()

    # -- children ---------------------------------------------------------------------------
    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.containers:
                cdir, cgroup = self.containers.pop(pid)
                if pid in self.stdin_holds:
                    os.close(self.stdin_holds.pop(pid))
                if pid in self.port_holds:
                    self.unpublish(cdir, self.port_holds.pop(pid))
                self.finish(cdir, cgroup, pid, exit_code(status))
            elif pid in self.execs:
                self.execs.pop(pid)
                self.send({"event": "exec_exit", "pid": pid, "exit_code": exit_code(status)})
            else:  # a zygote that died waiting, or the factory: never signal that pid again
                for zygote in self.zygotes:
                    if zygote.pid == pid:
                        zygote.alive = False
                self.zygotes = [z for z in self.zygotes if z.alive]
                if self.factory is not None and self.factory.pid == pid:
                    self.factory.pid = 0

    def unpublish(self, cdir: ContainerDir, socks: list[int]) -> None:
        """Remove an exited container's DNAT rules, then free its host ports (in that
        order: whoever reserves a port next must not meet a rule of this one)."""
        try:
            from .portmap import unforward  # libnftables: loaded only when ports were used
            unforward(cdir.id)
        except Exception as exc:  # noqa: BLE001 - the sweep removes them later
            print(f"pydock-monitor: removing the port rules of {cdir.id[:12]}: {exc}",
                  file=sys.stderr)
        for fd in socks:
            os.close(fd)

    def finish(self, cdir: ContainerDir, cgroup: Cgroup, pid: int, code: int) -> None:
        oom = cgroup.oom_killed()
        if cdir.id in self.doomed:
            # Removed in the background: nobody reads its exit.  Deleted when the loop is
            # idle, not in the way of the next request (the session's next container).
            self.doomed.discard(cdir.id)
            trash = self.table.discard(cdir)
            if trash is not None:
                self.trash.append(trash)
        else:
            self.finish_kept(cdir, pid, code, oom)
        # PID 1 is gone, so the kernel kills the rest of its PID namespace; the cgroup
        # empties as they die.  Removed from the loop, never waiting for it here.
        if not cgroup.try_remove():
            self.draining.append(cgroup)

    def finish_kept(self, cdir: ContainerDir, pid: int, code: int, oom: bool) -> None:
        """Record the exit of a container nobody removed, tell the client; --rm deletes."""
        try:
            # The cgroup stays in state.json until removed below, for the sweep.
            cdir.write_state(status="exited", exit_code=code, oom_killed=oom,
                             finished_at=now(), pid=0, ports=None)
            if cdir.launch_spec.auto_remove:
                self.table.record_exit(cdir, cdir.read_state())
                self.table.delete(cdir)
        except PydockError:
            pass  # removed meanwhile
        self.send({"event": "exited", "id": cdir.id, "pid": pid, "exit_code": code,
                   "oom_killed": oom})

    def client_gone(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        discard_all(self.zygotes)
        self.zygotes = []
        if self.factory is not None:
            self.factory.close()
            self.factory = None
        if not self.detach:
            for pid in [*self.containers, *self.execs]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def receive(self) -> tuple[dict[str, object] | None, list[int]]:
        """The client's next message; None when it is gone."""
        assert self.sock is not None
        for _ in range(2):
            try:
                return recv(self.sock)
            except ConnectionResetError:
                # It closed with events of ours unread.  What it sent before closing (a
                # removal, a purge) is still queued behind this error: read on.
                continue
            except (OSError, ValueError):
                break
        return None, []

    # -- loop -------------------------------------------------------------------------------
    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.reap()
        if not self.detach:
            try:
                self.factory = Factory(stage_dir(self.store_root))
            except OSError as exc:  # containers are then cloned here, only slower
                print(f"pydock-monitor: cannot start the zygote factory: {exc}",
                      file=sys.stderr)
        while self.sock is not None or self.containers or self.execs or self.trash:
            readers = [wake_r, *self.consoles] + ([self.sock] if self.sock is not None
                                                   else [])
            if self.factory is not None and len(self.zygotes) < ZYGOTES and \
                    self.sock is not None:
                # The next container's PID 1 is cloned (by the factory, in parallel) as
                # soon as the last one was taken.
                try:
                    self.factory.request(new_net=True, join_net=self.zygote_joins)
                except FactoryGone:
                    self.factory_gone()
            factory = self.factory
            if factory is not None and factory.pending:
                readers.append(factory.sock)
            # removed containers wait for an idle moment; with the client gone, none
            # is needed
            timeout = ((IDLE if self.sock is not None else 0) if self.trash else
                       0.005 if self.draining else 5.0)
            try:
                ready, _, _ = select.select(readers, [], [], timeout)
            except InterruptedError:
                ready = []
            if self.trash and (not ready or len(self.trash) > TRASH_MAX):
                import shutil
                shutil.rmtree(self.trash.pop(), ignore_errors=True)  # (or the sweep does)
            self.draining = [cg for cg in self.draining if not cg.try_remove()]
            if factory is not None and factory.sock in ready:
                self.receive_zygote()
            if wake_r in ready:
                try:
                    while os.read(wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            for master in [fd for fd in ready if fd in self.consoles]:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if data:
                    os.write(self.consoles[master], data)
                else:
                    os.close(self.consoles.pop(master))
                    os.close(master)
            self.reap()
            if self.sock is not None and self.sock in ready:
                msg, fds = self.receive()
                if msg is None:
                    self.client_gone()
                else:
                    self.handle(msg, fds)


def drain(cgroups: list[Cgroup]) -> None:
    for cg in cgroups:
        cg.remove()


def main(argv: list[str] | None = None) -> None:
    """``--fd N --store PATH [--detach]``, as client.py starts it (no argparse: ~20 ms
    of imports in a process every session waits for)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        fd = int(args[args.index("--fd") + 1])
        store = Path(args[args.index("--store") + 1])
    except (ValueError, IndexError):
        sys.exit("usage: pydock-monitor --fd N --store PATH [--detach]")
    sc.set_process_name(b"pydock-monitor")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    os.set_inheritable(fd, False)
    monitor = Monitor(sock, store, detach="--detach" in args)
    monitor.serve()
    drain(monitor.draining)
    sys.stderr.flush()
    os._exit(0)  # its work is done: no interpreter teardown for the client to wait out


if __name__ == "__main__":
    main()
