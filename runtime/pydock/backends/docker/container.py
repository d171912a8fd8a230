"""DockerContainer: one Docker container behind pydock's Container protocol."""

from __future__ import annotations

import io
import select
import socket
import sys
import tarfile
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...archive import file_tar
from ...errors import ContainerError, ContainerNotFound, ExecError, InvalidState, UsageError
from ...models import ContainerSpec, ExecResult, ExitStatus, Image, ImageRef, Mount, PortSpec
from ...spec import parse_signal
from ..base import Status
from .client import api_errors

if TYPE_CHECKING:
    from .backend import DockerBackend

STATES = {"created": Status.CREATED, "running": Status.RUNNING, "paused": Status.RUNNING,
          "restarting": Status.RUNNING, "removing": Status.EXITED, "exited": Status.EXITED,
          "dead": Status.EXITED}
NEVER = "0001-01-01T00:00:00Z"


def spec_of(doc: dict[str, Any]) -> ContainerSpec:
    """What a container was created with, read back from ``docker inspect``."""
    cfg, host = doc.get("Config") or {}, doc.get("HostConfig") or {}
    mounts = []
    for bind in host.get("Binds") or ():
        source, target, *mode = bind.split(":")
        mounts.append(Mount(target=target, source=source, readonly="ro" in mode[:1]))
    for target, options in (host.get("Tmpfs") or {}).items():
        mounts.append(Mount(target=target, kind="tmpfs", options=options,
                            readonly="ro" in options.split(",")))
    pids = host.get("PidsLimit")
    ports = []
    for key, bindings in (host.get("PortBindings") or {}).items():
        port, _, proto = key.partition("/")
        for b in bindings or ():
            start, _, end = (b.get("HostPort") or "").partition("-")
            ports.append(PortSpec(int(port), proto or "tcp", b.get("HostIp") or "0.0.0.0",
                                  int(start) if start else None, int(end) if end else None))
    return ContainerSpec(
        image_id=doc.get("Image") or "",
        image_name=cfg.get("Image") or "",
        argv=tuple(filter(None, [doc.get("Path")])) + tuple(doc.get("Args") or ()),
        env=tuple(cfg.get("Env") or ()),
        working_dir=cfg.get("WorkingDir") or "/",
        user=cfg.get("User") or "",
        hostname=cfg.get("Hostname") or "",
        name=(doc.get("Name") or "").lstrip("/"),
        labels=tuple(sorted((cfg.get("Labels") or {}).items())),
        mounts=tuple(mounts),
        network=host.get("NetworkMode") or "default",
        ports=tuple(ports),
        init=bool(host.get("Init")),
        tty=bool(cfg.get("Tty")),
        stdin_open=bool(cfg.get("OpenStdin")),
        auto_remove=bool(host.get("AutoRemove")),
        memory=host.get("Memory") or None,
        pids_limit=pids if pids and pids > 0 else None,
        cpus=(host.get("NanoCpus") or 0) / 1e9 or None,
        stop_signal=cfg.get("StopSignal") or "SIGTERM",
        stop_timeout=float(cfg.get("StopTimeout") or 10),
        cmd=None if cfg.get("Cmd") is None else tuple(cfg["Cmd"]),
        entrypoint=None if cfg.get("Entrypoint") is None else tuple(cfg["Entrypoint"]),
    )


class DockerContainer:
    """A handle on one Docker container (its state lives in the daemon, not here)."""

    def __init__(self, backend: DockerBackend, cid: str,
                 doc: dict[str, Any] | None = None) -> None:
        self.backend = backend
        self.id = cid
        self._doc = doc
        self._spec: ContainerSpec | None = None

    def __repr__(self) -> str:
        return f"<DockerContainer {self.name} {self.id[:12]}>"

    def __enter__(self) -> DockerContainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove(force=True)

    @property
    def api(self) -> Any:
        return self.backend.api

    def _errors(self, what: str) -> Any:
        return api_errors(f"{what} {self.name}", container=self.name)

    # -- what it is -------------------------------------------------------------------------
    def inspect(self) -> dict[str, Any]:
        """``docker inspect`` of the container (fresh)."""
        with api_errors(f"inspect {self.id[:12]}", container=self.id[:12]):
            doc: dict[str, Any] = self.api.inspect_container(self.id)
        self._doc = doc
        return doc

    def _known(self) -> dict[str, Any]:
        return self._doc if self._doc is not None else self.inspect()

    @property
    def name(self) -> str:
        return str(self._known().get("Name") or self.id[:12]).lstrip("/")

    @property
    def spec(self) -> ContainerSpec:
        if self._spec is None:
            self._spec = spec_of(self._known())
        return self._spec

    def state(self) -> dict[str, Any]:
        """status (created/running/exited), exit_code, oom_killed, pid, started_at,
        finished_at: the native backend's state keys."""
        st = self.inspect()["State"]
        status = STATES.get(st.get("Status", ""), Status.EXITED)
        return {
            "status": status.value,
            "exit_code": st.get("ExitCode") if status is Status.EXITED else None,
            "oom_killed": bool(st.get("OOMKilled")),
            "pid": st.get("Pid") or 0,
            "started_at": None if st.get("StartedAt") == NEVER else st.get("StartedAt"),
            "finished_at": None if st.get("FinishedAt") == NEVER else st.get("FinishedAt"),
            "error": st.get("Error") or None,
        }

    @property
    def status(self) -> Status:
        return Status(self.state()["status"])

    @property
    def pid(self) -> int:
        """Its PID 1 as a PID of this machine (0 when not running, or the daemon's
        processes are not visible here: a remote daemon)."""
        pid = int(self.inspect()["State"].get("Pid") or 0)
        return pid if pid and self._visible(pid) else 0

    def _visible(self, pid: int) -> bool:
        """Whether host PID ``pid`` is this container's PID 1 (its cgroup names the id)."""
        if not self.backend.endpoint.local:
            return False
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                return self.id in f.read()
        except OSError:
            return False

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, *, detach: bool = False, stdio: Sequence[int] | None = None,
              winsize: bytes | None = None) -> None:
        """Start it (a Docker container always outlives this process: ``detach`` changes
        nothing).  Attaching file descriptors is the native engine's alone."""
        if stdio:
            raise UsageError("the docker backend cannot attach file descriptors to a "
                             "container; read its output with logs()")
        with self._errors("start"):
            self.api.start(self.id)

    def wait(self, timeout: float | None = None) -> ExitStatus:
        """Block until it exits; its exit code (128+N for signal N) and OOM kill."""
        state = self.state()
        if state["status"] == "created" and not state["finished_at"]:
            raise InvalidState(f"container {self.name} has not been started")
        if timeout is not None and timeout <= 0:
            if state["status"] == "running":
                raise TimeoutError(f"container {self.name} still running")
        else:
            try:
                with self._errors("wait for"):
                    code = self.api.wait(self.id, timeout=timeout)["StatusCode"]
            except TimeoutError:
                raise TimeoutError(f"container {self.name} still running") from None
            except ContainerNotFound:  # auto-removed meanwhile
                return ExitStatus(int(state.get("exit_code") or 0), state["oom_killed"])
            try:
                state = self.state()
            except ContainerNotFound:
                return ExitStatus(int(code))
        return ExitStatus(int(state.get("exit_code") or 0), bool(state["oom_killed"]))

    def stop(self, timeout: float | None = None) -> None:
        """STOPSIGNAL (default SIGTERM), then SIGKILL after ``timeout`` (default: the
        container's stop timeout, 10 s)."""
        with self._errors("stop"):
            self.api.stop(self.id, timeout=None if timeout is None else int(timeout + 0.999))

    def kill(self, signal: str | int = "SIGKILL") -> None:
        number = parse_signal(signal)
        try:
            with self._errors("kill"):
                self.api.kill(self.id, signal=number)
        except InvalidState:
            raise InvalidState(f"cannot kill container {self.name}: it is not running") \
                from None

    def remove(self, *, force: bool = False, background: bool = False) -> None:
        """Delete it and its writable layer; ``force`` kills it first.  ``background``:
        the backend deletes it in a thread while the caller goes on (its name is freed at
        once); ``close()`` waits for that."""
        if background and force:
            try:
                with self._errors("rename"):
                    self.api.rename(self.id, f"pydock-rm-{self.id[:12]}")
            except ContainerNotFound:
                return
            except ContainerError:
                pass
            self.backend.remove_later(self)
            return
        try:
            with self._errors("remove"):
                self.api.remove_container(self.id, force=force, v=True)
        except ContainerNotFound:
            return
        except InvalidState as exc:
            if "removal of container" in str(exc) and "in progress" in str(exc):
                return  # auto-removed
            raise InvalidState(
                f"cannot remove container {self.name}: it is running; stop it first or "
                "use force (rm -f)") from None

    # -- ports and network faults -----------------------------------------------------------
    def ports(self) -> dict[str, list[tuple[str, int]]]:
        """Its published IPv4 ports while it runs: ``{"80/tcp": [("127.0.0.1", 49153)]}``."""
        doc = self.inspect()
        if not (doc.get("State") or {}).get("Running"):
            return {}
        out: dict[str, list[tuple[str, int]]] = {}
        for key, bindings in ((doc.get("NetworkSettings") or {}).get("Ports") or {}).items():
            for b in bindings or ():
                if ":" not in (b.get("HostIp") or "") and b.get("HostPort"):
                    out.setdefault(key, []).append((b.get("HostIp") or "0.0.0.0",
                                                    int(b["HostPort"])))
        return out

    def ip_address(self, network: str | None = None) -> str | None:
        """Its IPv4 address on ``network`` (default: its first), as the native container's:
        None when it is not running, not on that network, or the daemon is not on this
        machine's kernel (its bridges are then out of this host's reach)."""
        if not self.backend.endpoint.local or sys.platform != "linux":
            return None
        doc = self.inspect()
        if not (doc.get("State") or {}).get("Running"):
            return None
        nets = (doc.get("NetworkSettings") or {}).get("Networks") or {}
        for name, info in nets.items():
            info = info or {}
            if network is None or network in (name, info.get("NetworkID")):
                if info.get("IPAddress"):
                    return str(info["IPAddress"])
        return None

    def _fault_pid(self) -> int:
        if self.status is not Status.RUNNING:
            raise InvalidState(f"cannot set network faults on container {self.name}: it is "
                               "not running")
        if self.spec.network in ("host", "none") or self.spec.network.startswith("container:"):
            raise UsageError(f"cannot set network faults on container {self.name}: it is on "
                             f"network {self.spec.network} (faults need its own network "
                             "namespace on a bridge)")
        pid = self.pid
        if not pid:
            raise UsageError(
                f"network faults on container {self.name} are unsupported: they need the "
                f"Docker daemon on this machine ({self.backend.endpoint.base_url} is not), to "
                "reach the container's network namespace")
        return pid

    def set_faults(self, *, delay: str | float | None = None, jitter: str | float | None = None,
                   loss: str | float | None = None, rate: str | int | None = None,
                   interface: str = "eth0") -> Any:
        """Network faults on its traffic, applied in its network namespace as the native
        engine does (a local daemon only; see the native backend's set_faults)."""
        from ..native.faults import apply, netns_of
        pid = self._fault_pid()
        return apply(netns_of(pid), interface, delay=delay, jitter=jitter, loss=loss, rate=rate,
                     hold="process", watch=pid, owner=f"docker:{self.id[:12]}")

    def clear_faults(self, *, interface: str = "eth0") -> None:
        """Remove its network faults (nothing to do when it is not running)."""
        from ..native.faults import clear, netns_of
        if self.status is Status.RUNNING:
            clear(netns_of(self._fault_pid()), interface)

    # -- processes --------------------------------------------------------------------------
    def exec(self, argv: Sequence[str] | str, *, env: Sequence[str] = (),
             user: str | None = None, workdir: str | None = None,
             stdin: bytes | None = None, timeout: float | None = None) -> ExecResult:
        """Run a command in the running container and collect its exit code and output
        (stdout and stderr apart).  A string is run with ``/bin/sh -c``.  A command that
        is not found gives exit code 127, one that cannot run 126 (as with the native
        engine); TimeoutError after ``timeout`` seconds."""
        if isinstance(argv, str):
            argv = ["/bin/sh", "-c", argv]
        if not argv:
            raise ExecError("no command given to exec", exit_code=125)
        try:
            with self._errors("exec in"):
                exec_id = self.api.exec_create(
                    self.id, list(argv), stdin=stdin is not None, user=user or "",
                    environment=list(env) or None, workdir=workdir)["Id"]
                sock = self.api.exec_start(exec_id, socket=True)
        except InvalidState:
            raise InvalidState(f"container {self.name} is not running") from None
        raw = getattr(sock, "_sock", sock)
        try:
            out, err = _exchange(raw, stdin, timeout)
        finally:
            sock.close()
            raw.close()
        code = self._exec_exit(exec_id, timeout)
        if code == 126 and out.startswith(b"OCI runtime exec failed"):
            text = out.decode(errors="replace").strip()
            missing = "executable file not found" in text or "no such file" in text
            return ExecResult(127 if missing else 126, b"", (text + "\n").encode())
        return ExecResult(code, out, err)

    def _exec_exit(self, exec_id: str, timeout: float | None) -> int:
        deadline = time.monotonic() + (timeout if timeout is not None else 30)
        while True:
            with self._errors("exec in"):
                doc = self.api.exec_inspect(exec_id)
            if not doc.get("Running") and doc.get("ExitCode") is not None:
                return int(doc["ExitCode"])
            if time.monotonic() > deadline:
                raise TimeoutError(f"exec in {self.name} still running")
            time.sleep(0.005)

    def logs(self) -> tuple[bytes, bytes]:
        """Everything it wrote to stdout and stderr so far."""
        with self._errors("logs of"):
            out = self.api.logs(self.id, stdout=True, stderr=False)
            err = self.api.logs(self.id, stdout=False, stderr=True)
        return bytes(out), bytes(err)

    # -- readiness (ready.py) ---------------------------------------------------------------
    def netns_pid(self) -> int:
        """A host PID in its network namespace, for probes from inside (0: not running)."""
        pid = int(self.inspect()["State"].get("Pid") or 0)
        if not pid:
            return 0
        if not self._visible(pid):
            raise UsageError(
                f"container {self.name}: HTTP readiness probes need the Docker daemon on "
                f"this machine ({self.backend.endpoint.base_url} is not); use a port, log "
                "or command probe")
        return pid

    def listening_ports(self) -> set[tuple[str, int]]:
        """(proto, port) of its listening TCP and bound UDP sockets: read from the kernel's
        socket table of its network namespace when the daemon is local, else through an
        exec of ``cat /proc/net/...`` (the image then needs a ``cat``)."""
        from ...ready import _listening_ports
        pid = self.pid
        if pid:
            try:
                return _listening_ports(pid)
            except PermissionError:
                pass
        elif self.state()["status"] != "running":
            return set()
        tables = ["/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"]
        result = self.exec(["cat", *tables], timeout=10)
        if result.exit_code in (126, 127):
            raise UsageError(
                f"container {self.name}: port probes without access to its network "
                f"namespace (remote daemon {self.backend.endpoint.base_url}) need `cat` in "
                "the image; use a log or command probe")
        return parse_socket_tables(result.stdout.decode(errors="replace"))

    # -- files ------------------------------------------------------------------------------
    def put_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write ``data`` to the file ``path`` in the container (its directory must exist)."""
        parent, tar = file_tar(path, data, mode, mtime=int(time.time()))
        try:
            with self._errors(f"copy {path} into"):
                self.api.put_archive(self.id, parent, tar)
        except ContainerError as exc:
            if "could not find the file" in str(exc).lower():
                raise ContainerError(f"put_file: no directory {parent} in container "
                                     f"{self.name}") from exc
            raise

    def get_file(self, path: str) -> bytes:
        """The content of the file ``path`` in the container (symlinks followed)."""
        for _ in range(40):
            try:
                with self._errors(f"copy {path} from"):
                    stream, stat = self.api.get_archive(self.id, path)
                    raw = b"".join(stream)
            except ContainerError as exc:
                if "could not find the file" in str(exc).lower():
                    raise ContainerError(f"get_file: no such file {path} in container "
                                         f"{self.name}") from exc
                raise
            if stat.get("linkTarget"):
                path = stat["linkTarget"]
                continue
            with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
                member = tar.next()
                if member is None or not member.isfile():
                    raise ContainerError(f"get_file: {path} in container {self.name} is "
                                         "not a regular file")
                f = tar.extractfile(member)
                assert f is not None
                return f.read()
        raise ContainerError(f"get_file: {path} in container {self.name}: too many symlinks")

    def commit(self, ref: str | None = None, *, changes: Sequence[str] = (),
               message: str = "") -> Image:
        """Its image plus its writable layer as a new image (``docker commit``; Docker
        pauses a running container meanwhile).  An image committed without ``ref`` is
        removed when the backend closes."""
        repo = tag = None
        if ref is not None:
            parsed = ImageRef.parse(ref)
            repo, tag = parsed.name, parsed.tag
        with self._errors("commit"):
            image_id = self.api.commit(self.id, repository=repo, tag=tag,
                                       message=message or None, changes=list(changes))["Id"]
        if ref is None:
            self.backend.forget_image_at_close(image_id)
        return self.backend.image(image_id)


def parse_socket_tables(text: str) -> set[tuple[str, int]]:
    """(proto, port) from /proc/net/{tcp,tcp6,udp,udp6} text: LISTEN (0A) is TCP, an
    unconnected socket (07) UDP."""
    found = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 3 and ":" in fields[1] and fields[3] in ("0A", "07"):
            try:
                port = int(fields[1].rsplit(":", 1)[1], 16)
            except ValueError:
                continue
            found.add(("tcp" if fields[3] == "0A" else "udp", port))
    return found


def _exchange(sock: socket.socket, data: bytes | None,
              timeout: float | None) -> tuple[bytes, bytes]:
    """Send ``data`` (then EOF) on an exec's hijacked connection and read its multiplexed
    output frames (8-byte header: stream, 0, 0, 0, big-endian length) until it closes."""
    deadline = None if timeout is None else time.monotonic() + timeout
    if data:
        sock.sendall(data)
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    buf = bytearray()
    fd = sock.fileno()
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            raise TimeoutError("exec timed out")
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    streams: dict[int, list[bytes]] = {1: [], 2: []}
    pos = 0
    while pos + 8 <= len(buf):
        kind, size = buf[pos], int.from_bytes(buf[pos + 4:pos + 8], "big")
        streams.setdefault(kind, []).append(bytes(buf[pos + 8:pos + 8 + size]))
        pos += 8 + size
    return b"".join(streams[1]), b"".join(streams[2])
