"""The native backend: containers of a local store run by pydock's own runtime."""

from __future__ import annotations

import os
import select
import shutil
import struct
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...errors import (
    ContainerError,
    ContainerNotFound,
    EngineUnavailable,
    ExecError,
    InvalidState,
    PydockError,
    UsageError,
)
from ...models import ExecResult, ExitStatus, Image
from ...procs import proc_start_time
from ...spec import RunOptions, make_spec, parse_signal
from ...store import Store
from ..base import Capabilities, Status
from .client import MonitorClient
from .launch import write_etc_files
from .network import NetworkManager, default_gateway, is_networked
from .network_ipam import Network
from .state import ContainerDir, ContainerTable, containers_root, now, store_tag

if TYPE_CHECKING:
    from .faults import Faults

DEFAULT_WINSIZE = struct.pack("HHHH", 24, 80, 0, 0)


def check_host() -> None:
    """Raise EngineUnavailable saying what is missing for the native engine."""
    if not sys.platform.startswith("linux"):
        raise EngineUnavailable("the native engine needs Linux; use the docker backend")
    if os.geteuid() != 0:
        raise EngineUnavailable(
            "the native engine needs root (namespaces, overlay mounts and cgroups); run as "
            "root, e.g. sudo, or use the docker backend")


class NativeBackend:
    """Create, find and list containers; owns a session monitor for the containers it starts."""

    name = "native"
    capabilities = Capabilities()

    def __init__(self, store: Store | str | os.PathLike[str] | None = None, *,
                 network_pool: int = 2) -> None:
        """``network_pool``: how many ready network namespaces to keep per bridge network
        in use (0 for a process that starts one container, like a CLI command)."""
        self.store = store if isinstance(store, Store) else Store(store)
        self.table = ContainerTable(containers_root(self.store.root), self.store.root)
        self.network_pool = network_pool
        self._network: NetworkManager | None = None
        self._monitor: MonitorClient | None = None
        self._lock = threading.Lock()
        self._swept = False
        self._images: dict[str, tuple[Any, Image, list[str]]] = {}

    # -- monitors ---------------------------------------------------------------------------
    def monitor(self) -> MonitorClient:
        """The session monitor (started on first use); its containers die with this object."""
        with self._lock:
            if self._monitor is None:
                check_host()
                self._sweep_once()
                self._monitor = MonitorClient(self.store.root)
            return self._monitor

    def warm(self) -> None:
        """Start the session monitor now without waiting for it: it loads (~0.1 s) while
        this process sweeps and goes on, and the first start waits less.  A host that
        cannot run containers is reported by the first create, not here."""
        with self._lock:
            if self._monitor is None:
                try:
                    check_host()
                except EngineUnavailable:
                    return
                self._monitor = MonitorClient(self.store.root)
                self._sweep_once()

    def close(self) -> None:
        """Stop the session monitor (containers it still runs are killed); when the store
        has no container left, remove its run directory from the host."""
        with self._lock:
            if self._monitor is not None:
                self._monitor.close()
                self._monitor = None
            if self._network is not None:
                self._network.close()
                # the default bridge goes with its last user: nothing of ours stays on
                # the host (the next networked container makes it again)
                try:
                    self._network.remove_idle_default()
                except Exception:  # noqa: BLE001 - the next sweep removes it
                    pass
                self._network = None
        self.tidy()

    def tidy(self) -> None:
        """Remove the store's (tmpfs) run directory if no container is left in it."""
        try:
            names = os.listdir(self.table.root)
        except FileNotFoundError:
            return
        if not any(n != "names" for n in names):
            with self.store.lock():
                self.table.tidy()

    def __enter__(self) -> NativeBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sweep(self) -> list[str]:
        """Settle containers whose monitor died (exited, 137) and remove their cgroups, and
        whatever else dead monitors and deleted stores left; returns the settled ids."""
        from .sweep import sweep
        self._swept = True
        return sweep(self.table)

    def _sweep_once(self) -> None:
        if not self._swept and os.geteuid() == 0:
            self.sweep()

    # -- containers -------------------------------------------------------------------------
    def image(self, ref: str) -> Image:
        return self.store.image(ref)

    def create(self, image: str | Image, options: RunOptions | None = None,
               **kw: Any) -> NativeContainer:
        """Create (not start) a container from ``image`` with RunOptions or keywords."""
        check_host()
        self._sweep_once()
        opts = options or RunOptions(**kw)
        # Under the store lock, so that rmi / gc never remove the image meanwhile.
        with self.store.lock():
            if isinstance(image, Image) and not self.store.has_image(image.id):
                # An image the builder holds in memory (a step's result, not stored).
                img, layers = image, self.store.layer_names(image)
            else:
                img, layers = self._image(image.id if isinstance(image, Image) else image)
            cdir = self.table.new(lambda cid: self._checked_spec(img, opts, cid), layers,
                                  img.id, now())
        wants_gateway = any(ip == "host-gateway" for _, ip in cdir.spec.extra_hosts)
        write_etc_files(cdir, host_gateway=default_gateway() if wants_gateway else None)
        return NativeContainer(self, cdir)

    def run(self, image: str | Image, options: RunOptions | None = None,
            **kw: Any) -> NativeContainer:
        """Create and start a container; the caller removes it (or use it as a context)."""
        c = self.create(image, options, **kw)
        try:
            c.start()
        except BaseException:
            c.remove(force=True)
            raise
        return c

    def _checked_spec(self, img: Image, opts: RunOptions, cid: str) -> Any:
        spec = make_spec(img, opts, container_id=cid)
        if is_networked(spec.network) and spec.network != "bridge":
            self.network(spec.network)  # NetworkNotFound before anything is made
        return spec

    # -- networks ---------------------------------------------------------------------------
    def network_manager(self) -> NetworkManager:
        """The networks and network namespace pool of this client (made on first use)."""
        with self._lock:
            if self._network is None:
                check_host()
                self._network = NetworkManager(self.store.root, store_tag(self.store.root),
                                               pool_size=self.network_pool)
            return self._network

    def create_network(self, name: str, *, subnet: str | None = None,
                       gateway: str | None = None,
                       labels: dict[str, str] | None = None) -> Network:
        """A user network (its own bridge; ``subnet`` default: a free /24 of
        $PYDOCK_SUBNET).  Containers on it reach each other by name and alias."""
        return self.network_manager().create_network(name, subnet=subnet, gateway=gateway,
                                                     labels=labels)

    def network(self, ref: str) -> Network:
        """A network by name or id: ``bridge`` (the default), ``host``, ``none`` or a user
        network of this store; NetworkNotFound otherwise."""
        if ref in ("bridge", "default", "host", "none"):
            return self.network_manager().network(ref)
        from .network_ipam import peek
        return peek().find(ref, str(self.store.root.resolve()))

    def networks(self) -> list[Network]:
        return self.network_manager().networks()

    def remove_network(self, ref: str) -> Network:
        """Remove a user network and its bridge (refused while containers run on it)."""
        return self.network_manager().remove_network(ref)

    def _image(self, ref: str) -> tuple[Image, list[str]]:
        """The image and its layer names, remembered while the store's tags and the image's
        config are unchanged (a test suite creates many containers of one image)."""
        try:
            stamp = (os.stat(self.store.root / "tags.json").st_mtime_ns,
                     os.stat(self.store.images_dir).st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        hit = self._images.get(ref)
        if hit is not None and stamp is not None and hit[0] == stamp and \
                os.path.exists(self.store.images_dir / f"{hit[1].id.removeprefix('sha256:')}.json"):
            return hit[1], hit[2]
        img = self.store.image(ref)
        layers = self.store.layer_names(img)
        if stamp is not None:
            self._images[ref] = (stamp, img, layers)
        return img, layers

    def container(self, ref: str) -> NativeContainer:
        self._sweep_once()
        return NativeContainer(self, self.table.lookup(ref))

    def containers(self, *, all: bool = False) -> list[NativeContainer]:
        self._sweep_once()
        out = []
        for cid in self.table.ids():
            c = NativeContainer(self, ContainerDir(self.table.root / cid))
            try:
                if all or c.status is Status.RUNNING:
                    out.append(c)
            except PydockError:
                continue
        out.sort(key=lambda c: c.dir.config.get("created", ""), reverse=True)
        return out


class NativeContainer:
    """A handle on one native container (its state lives in the store, not in this object)."""

    def __init__(self, backend: NativeBackend, cdir: ContainerDir) -> None:
        self.backend = backend
        self.dir = cdir
        self.id = cdir.id
        self._client: MonitorClient | None = None

    def __repr__(self) -> str:
        return f"<NativeContainer {self.name} {self.id[:12]}>"

    def __enter__(self) -> NativeContainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove(force=True)

    @property
    def name(self) -> str:
        return str(self.dir.config["name"])

    @property
    def spec(self) -> Any:
        return self.dir.spec

    def state(self) -> dict[str, Any]:
        state = self.dir.read_state()
        if state.get("status") == "running" and not _alive(state.get("monitor_pid"),
                                                            state.get("monitor_start")):
            # Its monitor died (SIGKILL): the container died with it (PDEATHSIG).
            from .sweep import settle
            state = settle(self.dir, state)
        return state

    @property
    def status(self) -> Status:
        return Status(self.state().get("status", "created"))

    @property
    def pid(self) -> int:
        return int(self.state().get("pid") or 0)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, *, stdio: Sequence[int] | None = None, detach: bool = False,
              winsize: bytes | None = None) -> int | None:
        """Start the container.  ``detach``: run it under its own monitor, so it outlives
        this process (the CLI's ``run -d`` and ``start``); else under the session monitor.

        For a tty container (spec.tty) started attached, returns the master fd of its
        terminal (made inside the container, sized ``winsize``); the caller closes it.
        """

        status = self.status
        if status is Status.RUNNING:
            raise InvalidState(f"container {self.name} is already running")
        if self.spec.tty:
            winsize = winsize or DEFAULT_WINSIZE
        fds = list(stdio) if stdio else None
        if detach:
            check_host()
            self.backend._sweep_once()
            client = MonitorClient(self.backend.store.root, detach=True)
            try:
                self._start_with_network(client, fds, winsize)
            finally:
                client.close(wait=False)
            return None
        client = self.backend.monitor()
        self._client = client
        return self._start_with_network(client, fds, winsize)

    def _start_with_network(self, client: MonitorClient, fds: list[int] | None,
                            winsize: bytes | None) -> int | None:
        """Start under ``client``'s monitor; a bridge-networked container gets its network
        namespace (its addresses held by that monitor) with the request."""
        if not is_networked(self.spec.network):
            return client.start(self.id, fds, winsize=winsize)
        from . import portmap
        # Published ports first: a taken host port fails the start before anything is made.
        held = portmap.reserve_all(self.spec.ports)
        try:
            net = self.backend.network_manager()
            netns = net.attach(self.dir, client.process.pid)
            try:
                published = None
                if held:
                    from .network import addresses
                    first_net, lease = addresses(self.id)[0]
                    published = portmap.ports_doc(portmap.forward(
                        self.id, held, container_ip=lease.ip, bridge=first_net.bridge))
                return client.start(self.id, fds, winsize=winsize, netns=netns,
                                    ports=[sock.fileno() for sock, _, _ in held],
                                    published=published)
            except BaseException:
                if held:
                    portmap.unforward(self.id)
                net.release(self.id)
                raise
            finally:
                os.close(netns)
                net.refill()
        finally:
            portmap.release_all(held)  # the monitor holds its own copies from now on

    def wait(self, timeout: float | None = None) -> ExitStatus:
        """Block until the container exits; its exit code (128+N for signal N) and OOM kill."""
        try:
            state = self.state()
        except ContainerNotFound:
            return self._exit_of_removed()
        if state.get("status") == "running":
            client = self._client or self.backend._monitor
            if client is not None and state.get("monitor_pid") == client.process.pid:
                ev = client.wait_event({"event": "exited", "id": self.id,
                                        "pid": state.get("pid")}, timeout)
                if ev is None:
                    raise TimeoutError(f"container {self.name} still running")
                return ExitStatus(int(ev["exit_code"]),  # type: ignore[call-overload]
                                  bool(ev.get("oom_killed")))
            else:
                _wait_pid(int(state["pid"]), timeout)
            state = self._wait_recorded(timeout)
        if state.get("status") == "created" and state.get("exit_code") is None:
            raise InvalidState(f"container {self.name} has not been started")
        return ExitStatus(int(state.get("exit_code") or 0), bool(state.get("oom_killed")))

    def _exit_of_removed(self) -> ExitStatus:
        """The exit status of a container already auto-removed (--rm)."""
        client = self._client or self.backend._monitor
        ev = client.wait_event({"event": "exited", "id": self.id}, 0) if client else None
        doc: dict[str, Any] | None = ev or self.backend.table.exit_record(self.id)
        if doc is None:
            raise ContainerNotFound(self.name)
        return ExitStatus(int(doc.get("exit_code") or 0), bool(doc.get("oom_killed")))

    def _wait_recorded(self, timeout: float | None) -> dict[str, Any]:
        deadline = time.monotonic() + (timeout if timeout is not None else 30)
        while True:
            try:
                state = self.state()
            except ContainerError:  # removed with --rm: its monitor left the exit status
                return self.backend.table.exit_record(self.id) or {"status": "exited",
                                                                    "exit_code": 0}
            if state.get("status") != "running" or time.monotonic() > deadline:
                return state
            time.sleep(0.002)

    def kill(self, signal: str | int = "SIGKILL") -> None:
        state = self.state()
        if state.get("status") != "running":
            raise InvalidState(f"cannot kill container {self.name}: it is not running")
        pid = int(state["pid"])
        if proc_start_time(pid) != state.get("pid_start"):
            return
        try:
            os.kill(pid, parse_signal(signal))
        except ProcessLookupError:
            pass

    def stop(self, timeout: float | None = None) -> None:
        """STOPSIGNAL (default SIGTERM), then SIGKILL after ``timeout`` (default 10 s)."""
        spec = self.spec
        timeout = spec.stop_timeout if timeout is None else timeout
        if self.status is not Status.RUNNING:
            return
        try:
            self.kill(spec.stop_signal)
            self.wait(timeout)
        except TimeoutError:
            self.kill("SIGKILL")
            self.wait(30)
        except InvalidState:
            pass

    def remove(self, *, force: bool = False, background: bool = False) -> None:
        """Delete the container and its writable layer; ``force`` kills it first.

        ``background``: for a running container of this backend's session monitor, let the
        monitor kill and delete it while the caller goes on (a test's teardown then costs
        nothing); the monitor finishes the job before the session ends.
        """
        if not self.dir.path.exists():
            return
        state = self.state()
        if state.get("status") == "running":
            if not force:
                raise InvalidState(
                    f"cannot remove container {self.name}: it is running; stop it first "
                    "or use force (rm -f)")
            client = self.backend._monitor
            if background and client is not None and \
                    state.get("monitor_pid") == client.process.pid:
                self.backend.table.release_name(self.dir)  # reusable at once
                # No answer awaited: if it exited meanwhile, the monitor deletes it anyway.
                if client.notify({"op": "remove", "id": self.id}):
                    self._release_addresses()
                    return
            try:
                self.kill("SIGKILL")
                self.wait(30)
            except (InvalidState, TimeoutError):
                pass
        self._release_addresses()
        trash = self.backend.table.discard(self.dir)  # gone for every lookup from now
        client = self.backend._monitor
        # Its files are deleted by the session monitor when idle (or at its exit).
        if trash is not None and not (client is not None and
                                      client.notify({"op": "purge", "path": str(trash)})):
            shutil.rmtree(trash, ignore_errors=True)

    def _release_addresses(self) -> None:
        if self.spec.ports:  # its monitor removed them when it exited; unless it died
            from .portmap import unforward
            unforward(self.id)
        if is_networked(self.spec.network):
            from .network_ipam import peek
            if any(lease.cid == self.id for lease in peek().leases()):
                self.backend.network_manager().release(self.id)

    # -- networks ---------------------------------------------------------------------------
    def ip_address(self, network: str | None = None) -> str | None:
        """The container's address on ``network`` (default: its first), None when it is
        not running or not on that network."""
        from .network import addresses
        if self.status is not Status.RUNNING:
            return None
        for net, lease in addresses(self.id):
            if network is None or network in (net.name, net.id) or \
                    (network == "bridge" and net.store is None):
                return lease.ip
        return None

    def connect(self, network: str, *, aliases: Sequence[str] = ()) -> None:
        """``network connect``: join ``network`` now if running, else from the next start."""
        state = self.state()
        running = state.get("status") == "running"
        self.backend.network_manager().connect(
            self.dir, network, aliases=aliases, pid=int(state["pid"]) if running else 0,
            holder_pid=int(state.get("monitor_pid") or 0) if running else 0)

    def disconnect(self, network: str) -> None:
        """``network disconnect``: leave ``network`` (its interface goes now if running)."""
        self.backend.network_manager().disconnect(self.dir, network)

    def ports(self) -> dict[str, list[tuple[str, int]]]:
        """Its published ports while it runs: ``{"80/tcp": [("127.0.0.1", 49153)]}``
        (``docker port``); {} when it is not running or publishes none."""
        state = self.state()
        if state.get("status") != "running":
            return {}
        return {key: [(str(ip), int(port)) for ip, port in bindings]
                for key, bindings in (state.get("ports") or {}).items()}

    # -- network faults ---------------------------------------------------------------------
    def _netns_pid(self, what: str) -> int:
        state = self.state()
        if state.get("status") != "running":
            raise InvalidState(f"cannot {what} container {self.name}: it is not running")
        if not is_networked(self.spec.network):
            raise UsageError(f"cannot {what} container {self.name}: it is on network "
                             f"{self.spec.network} (faults need a bridge network: on host "
                             "they would hit the host's own interfaces)")
        return int(state["pid"])

    def set_faults(self, *, delay: str | float | None = None, jitter: str | float | None = None,
                   loss: str | float | None = None, rate: str | int | None = None,
                   interface: str = "eth0") -> Faults:
        """Delay (``"100ms"``), jitter, loss (``"5%"``) and rate (``"1mbit"``) on the
        traffic leaving its ``interface``, replacing earlier faults (faults.py).  Where the
        kernel lacks netem the delay is held by a small ``pydock-delay`` process that ends
        with the container (or at ``clear_faults``)."""
        from .faults import apply, netns_of
        pid = self._netns_pid("set network faults on")
        return apply(netns_of(pid), interface, delay=delay, jitter=jitter, loss=loss,
                     rate=rate, hold="process", watch=pid, owner=str(self.dir.path))

    def clear_faults(self, *, interface: str = "eth0") -> None:
        """Remove its network faults (nothing to do when it is not running)."""
        from .faults import clear, netns_of
        if self.status is Status.RUNNING and is_networked(self.spec.network):
            clear(netns_of(self.pid), interface)

    # -- processes --------------------------------------------------------------------------
    def exec_start(self, argv: Sequence[str], *, stdio: Sequence[int] = (),
                   env: Sequence[str] = (), user: str | None = None,
                   workdir: str | None = None, tty: bool = False,
                   winsize: bytes | None = None) -> tuple[int, int | None]:
        """Start ``argv`` in the running container with the given fds.

        Returns (exec id, pty master fd or None); with ``tty`` the command gets a terminal
        made inside the container.
        """
        if not argv:
            raise ExecError("no command given to exec", exit_code=125)
        state = self.state()
        if state.get("status") != "running":
            raise InvalidState(f"container {self.name} is not running")
        spec = self.spec
        from ...spec import merge_env
        full_env = merge_env(spec.env, list(env))
        if tty and not any(e.startswith("TERM=") for e in full_env):
            full_env = (*full_env, "TERM=xterm")
        client = self.backend.monitor()
        reply = client.request(
            {"op": "exec", "id": self.id, "argv": list(argv), "env": list(full_env),
             "cwd": workdir or spec.working_dir, "user": spec.user if user is None else user,
             "tty": tty, "winsize": (winsize or DEFAULT_WINSIZE).hex()}, list(stdio))
        if not reply.get("ok"):
            raise ExecError(f"exec in container {self.name}: {reply.get('error')}",
                            exit_code=int(reply.get("exit_code") or 126))  # type: ignore
        fds = reply.get("fds") or []
        return int(reply["pid"]), (fds[0] if fds else None)  # type: ignore

    def exec_wait(self, exec_id: int, timeout: float | None = None) -> int:
        ev = self.backend.monitor().wait_event({"event": "exec_exit", "pid": exec_id},
                                               timeout)
        if ev is None:
            raise TimeoutError(f"exec {exec_id} in {self.name} still running")
        return int(ev["exit_code"])  # type: ignore[call-overload]

    def exec(self, argv: Sequence[str] | str, *, env: Sequence[str] = (),
             user: str | None = None, workdir: str | None = None,
             stdin: bytes | None = None, timeout: float | None = None) -> ExecResult:
        """Run a command in the running container and collect its exit code and output.

        A string is run with ``/bin/sh -c``.  ExecError when it cannot start (exit code
        127 when not found), TimeoutError after ``timeout`` seconds.
        """
        if isinstance(argv, str):
            argv = ["/bin/sh", "-c", argv]
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        try:
            exec_id, _ = self.exec_start(argv, stdio=[in_r, out_w, err_w], env=env,
                                         user=user, workdir=workdir)
        except ExecError as exc:
            for fd in (in_r, in_w, out_r, out_w, err_r, err_w):
                os.close(fd)
            if exc.exit_code in (126, 127):
                return ExecResult(exc.exit_code, b"", (str(exc) + "\n").encode())
            raise
        for fd in (in_r, out_w, err_w):
            os.close(fd)
        out, err = _pump(in_w, stdin or b"", out_r, err_r, timeout)
        return ExecResult(self.exec_wait(exec_id, timeout), out, err)

    def logs(self) -> tuple[bytes, bytes]:
        """Everything the container wrote to stdout and stderr so far."""
        out = []
        for path in (self.dir.stdout_log, self.dir.stderr_log):
            try:
                out.append(path.read_bytes())
            except FileNotFoundError:
                out.append(b"")
        return out[0], out[1]

    def inspect(self) -> dict[str, Any]:
        from .inspect import container_doc
        return container_doc(self)


def _alive(pid: Any, start: Any) -> bool:
    return bool(pid) and proc_start_time(int(pid)) == start


def _wait_pid(pid: int, timeout: float | None) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            raise TimeoutError(f"process {pid} still running")
    finally:
        os.close(fd)


def _pump(in_w: int, data: bytes, out_r: int, err_r: int,
          timeout: float | None) -> tuple[bytes, bytes]:
    """Feed ``data`` to in_w and read out_r / err_r until both close."""
    outs: dict[int, list[bytes]] = {out_r: [], err_r: []}
    readers = [out_r, err_r]
    writers = [in_w] if data else []
    if not data:
        os.close(in_w)
    view = memoryview(data)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while readers or writers:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            r, w, _ = select.select(readers, writers, [], left)
            if not r and not w:
                raise TimeoutError("exec timed out")
            for fd in r:
                chunk = os.read(fd, 65536)
                if chunk:
                    outs[fd].append(chunk)
                else:
                    readers.remove(fd)
                    os.close(fd)
            for fd in w:
                try:
                    n = os.write(fd, view[:65536])
                except BrokenPipeError:
                    n = len(view)
                view = view[n:]
                if not view:
                    writers.remove(fd)
                    os.close(fd)
    finally:
        for fd in readers + writers:
            os.close(fd)
    return b"".join(outs[out_r]), b"".join(outs[err_r])

