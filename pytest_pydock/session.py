"""The test-session object behind the ``pydock`` fixture; a plain class usable without pytest.

    with PydockSession(NativeBackend()) as pd:
        with pd.run("busybox", ["sleep", "60"], ready=pd.log("started")) as c:
            assert c.exec(["echo", "hi"]).stdout == b"hi\\n"
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, TypeAlias

from pydock import (
    BuildError,
    ExecResult,
    Image,
    ImageConfig,
    Mount,
    NativeBackend,
    NativeContainer,
    RunOptions,
)
from pydock.procs import process_label
from pydock.ready import (
    ExecProbe,
    HealthcheckProbe,
    HttpProbe,
    LogProbe,
    NotReady,
    PortProbe,
    Probe,
    last_log_lines,
    wait_ready,
)

from .options import Keep

if TYPE_CHECKING:
    from pydock import BuildReporter, BuildResult, DockerBackend, DockerContainer

AnyBackend: TypeAlias = "NativeBackend | DockerBackend"
AnyContainer: TypeAlias = "NativeContainer | DockerContainer"
Ports: TypeAlias = "Sequence[int | str] | Mapping[int | str, int | None]"


def publish_specs(ports: Ports) -> list[str]:
    """``run(ports=...)`` as ``-p`` specs on 127.0.0.1: ``8000`` or ``"53/udp"`` (a free
    host port), ``{8000: 18000}`` (that one), ``{8000: None}`` (a free one)."""
    items = ports.items() if isinstance(ports, Mapping) else ((p, None) for p in ports)
    return [f"127.0.0.1:{'' if host is None else host}:{port}" for port, host in items]


class Container:
    """A container a test uses: run commands in it, read its output, move files, commit."""

    def __init__(self, inner: AnyContainer, *, image: str) -> None:
        self._c = inner
        self.image = image
        self.id = inner.id
        self.name = inner.name
        self.start_seconds = 0.0

    def __repr__(self) -> str:
        return f"<pydock Container {self.name} ({self.image})>"

    @property
    def status(self) -> str:
        """created, running or exited."""
        return self._c.status.value

    @property
    def native(self) -> AnyContainer:
        """The engine's handle, for what this class does not wrap."""
        return self._c

    def exec(self, cmd: Sequence[str] | str, *, user: str | None = None,
             env: Mapping[str, str] | None = None, workdir: str | None = None,
             stdin: bytes | None = None, timeout: float | None = 60) -> ExecResult:
        """Run ``cmd`` (a string runs with /bin/sh -c) in the running container."""
        return self._c.exec(cmd, user=user, workdir=workdir, stdin=stdin, timeout=timeout,
                            env=[f"{k}={v}" for k, v in (env or {}).items()])

    def logs(self) -> str:
        """Everything it wrote to stdout and stderr so far."""
        out, err = self._c.logs()
        return (out + err).decode(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> str:
        """Wait for a line of its output matching the regex ``pattern``; that line.

        Read what a test's own request made it print this way, not with one ``logs()``:
        a Docker daemon hands a container's output on a moment after it was written.
        Raises NotReady, with the last log lines, after ``timeout`` seconds or once the
        container exited without printing it.
        """
        probe = LogProbe(pattern)
        deadline = time.monotonic() + timeout
        while True:
            running = self._c.state().get("status") == "running"
            if (line := probe.line(self._c)) is not None:
                return line
            if not running or time.monotonic() > deadline:
                why = "exited" if not running else f"after {timeout:g} s"
                raise NotReady(f"container {self.name}: no log line matching {pattern!r} "
                               f"({why})\n{last_log_lines(self._c)}")
            time.sleep(0.02)

    def put(self, path: str, data: bytes | str, *, mode: int = 0o644) -> None:
        """Write a file into the container (its directory must exist)."""
        raw = data.encode() if isinstance(data, str) else data
        if not isinstance(self._c, NativeContainer):
            return self._c.put_file(path, raw, mode=mode)
        from pydock.backends.native import rootfs
        rootfs.put_file(self._c, path, raw, mode=mode)

    def get(self, path: str) -> bytes:
        """Read a file from the container."""
        if not isinstance(self._c, NativeContainer):
            return self._c.get_file(path)
        from pydock.backends.native import rootfs
        return rootfs.get_file(self._c, path)

    def commit(self, ref: str | None = None, *, changes: Sequence[str] = ()) -> Image:
        """Its writable layer as a new image on top of its image (seed once, fork per test)."""
        if not isinstance(self._c, NativeContainer):
            return self._c.commit(ref, changes=changes)
        from pydock.backends.native import rootfs
        return rootfs.commit(self._c, ref=ref, changes=changes)

    def ports(self) -> dict[str, list[tuple[str, int]]]:
        """Its published ports: ``{"8000/tcp": [("127.0.0.1", 49153)]}`` (``pydock port``)."""
        return self._c.ports()

    def address(self, port: int, proto: str = "tcp") -> tuple[str, int]:
        """Where the host reaches ``port`` of the container.

        A published port (``run(ports=[port])``) answers on its host address and port;
        else containers on a bridge network (the default ``bridge`` or a user network)
        answer on their IP address, and containers on the host network on 127.0.0.1.
        """
        bindings = self._c.ports().get(f"{port}/{proto}")
        if bindings:
            host, published = bindings[0]
            return ("127.0.0.1" if host == "0.0.0.0" else host, published)
        if self._c.spec.network == "host":
            return ("127.0.0.1", port)
        lookup = getattr(self._c, "ip_address", None)  # a backend without it: no address
        ip = lookup() if lookup is not None else None
        if not ip:
            raise RuntimeError(
                f"container {self.name} has no address the host can reach (network "
                f"{self._c.spec.network!r}, or not running): run it on a bridge network, or "
                "probe it from inside (pydock.http)")
        return (ip, port)

    def url(self, port: int, path: str = "/") -> str:
        host, p = self.address(port)
        return f"http://{host}:{p}{path}"

    def faults(self, *, delay: str | float | None = None, jitter: str | float | None = None,
               loss: str | float | None = None, rate: str | int | None = None,
               interface: str = "eth0") -> FaultsApplied:
        """Network faults on its traffic now (``delay="100ms", jitter="10ms", loss="5%",
        rate="1mbit"``), replacing earlier ones; as a context manager they are cleared at
        its end.  Needs a bridge network (see README: what needs tc netem)."""
        self._c.set_faults(delay=delay, jitter=jitter, loss=loss, rate=rate,
                           interface=interface)
        return FaultsApplied(self, interface)

    def clear_faults(self, *, interface: str = "eth0") -> None:
        """Remove its network faults: normal traffic again."""
        self._c.clear_faults(interface=interface)

    def connect(self, network: str, *, aliases: Sequence[str] = ()) -> None:
        """Join ``network`` (another of ``pydock.network()``'s) while running."""
        connect = getattr(self._c, "connect", None)
        if connect is None:
            raise NotImplementedError("connect() needs the native backend")
        connect(network, aliases=aliases)

    def disconnect(self, network: str) -> None:
        """Leave ``network``: its peers there stop reaching it (a partition)."""
        disconnect = getattr(self._c, "disconnect", None)
        if disconnect is None:
            raise NotImplementedError("disconnect() needs the native backend")
        disconnect(network)

    def stop(self, timeout: float | None = None) -> None:
        self._c.stop(timeout)

    def kill(self, signal: str | int = "SIGKILL") -> None:
        self._c.kill(signal)

    def restart(self, timeout: float | None = None) -> None:
        """Stop it and start it again, keeping its writable layer."""
        self._c.stop(timeout)
        self._c.start()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for it to exit; its exit code."""
        return self._c.wait(timeout).exit_code


class FaultsApplied:
    """What ``Container.faults`` returns: ``with c.faults(delay="200ms"): ...`` clears them
    at the end of the block."""

    def __init__(self, container: Container, interface: str) -> None:
        self.container, self.interface = container, interface

    def __enter__(self) -> Container:
        return self.container

    def __exit__(self, *exc: object) -> None:
        self.container.clear_faults(interface=self.interface)


@dataclass
class Record:
    """What the session remembers of a container for reports."""

    container: Container
    test: str | None
    command: str
    status: str = "created"  # as last seen (a report may come after the removal)
    exit_code: int | None = None
    logs: str = ""
    removed: bool = False


@dataclass
class PydockSession:
    """Images and containers for one test session (one per xdist worker)."""

    backend: AnyBackend
    keep: Keep = Keep.NEVER
    worker: str = ""
    current_test: str | None = None
    records: list[Record] = field(default_factory=list)
    kept: list[Record] = field(default_factory=list)
    on_started: Callable[[Container], None] | None = None
    on_finished: Callable[[Container, str | None, str | None], None] | None = None
    on_build_progress: Callable[[str], None] | None = None
    builds: list[BuildResult] = field(default_factory=list)
    _built: dict[tuple[object, ...], Image | BuildError] = field(default_factory=dict)

    _networks: list[str] = field(default_factory=list)
    # ``pid:start time`` of this process, the label of its test containers and networks:
    # the sweep deletes those of sessions that are gone (a SIGKILLed pytest)
    label: str = field(default_factory=process_label)

    def __enter__(self) -> PydockSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- images ------------------------------------------------------------------------------
    def image(self, ref: str) -> Image:
        """An image already in the store (``pydock images``; docker: the daemon's)."""
        return self.backend.image(ref)

    def build(self, context: str | os.PathLike[str], dockerfile: str | None = None, *,
              target: str | None = None, build_args: Mapping[str, str] | None = None,
              tag: str | None = None, no_cache: bool = False) -> Image:
        """Build ``context`` into an image; ``dockerfile`` is relative to the context
        (default ``Dockerfile``).

        Once per session for all xdist workers: each step is built under a lock by the first
        worker that needs it and found in the cache by the others, and an unchanged image is
        reused from the store's cache by later sessions.  A failed build raises the same
        ``BuildError`` (Dockerfile line, command output) for every test that needs it.
        """
        args = dict(build_args or {})
        key = (os.path.abspath(context), dockerfile, target, tuple(sorted(args.items())), tag,
               no_cache)
        done = self._built.get(key)
        if isinstance(done, BuildError):
            raise done
        if done is not None:
            return done
        try:
            image = self._build(os.fspath(context), dockerfile, target, args, tag, no_cache)
        except BuildError as exc:
            self._built[key] = exc
            raise
        self._built[key] = image
        return image

    def _build(self, context: str, dockerfile: str | None, target: str | None,
               args: dict[str, str], tag: str | None, no_cache: bool) -> Image:
        if not isinstance(self.backend, NativeBackend):
            return self.backend.build(
                context, dockerfile=dockerfile, target=target, build_args=args, tag=tag,
                no_cache=no_cache,
                progress=_progress_line(context, self.on_build_progress))
        from pydock import BuildOptions, build  # the builder: loaded for the first build only
        from pydock.sources import resolve_base
        path = os.path.join(context, dockerfile) if dockerfile else None  # (abs stays abs)
        opts = BuildOptions(context=context, dockerfile=path, target=target, build_args=args,
                            tags=(tag,) if tag else (), no_cache=no_cache)
        reporter = _progress_reporter(context, self.on_build_progress)
        result = build(self.backend.store, opts, backend=self.backend, reporter=reporter,
                       resolve_base=resolve_base)
        self.builds.append(result)
        return result.image

    def pull(self, ref: str) -> Image:
        """``ref`` from its registry (``docker.io/library/`` by default; credentials from
        ~/.docker/config.json); parallel xdist workers download each layer once.  An image
        the store already has under that name is not fetched again."""
        if not isinstance(self.backend, NativeBackend):
            return self.backend.pull(ref)
        from pydock import ImageNotFound, pull
        try:
            return self.backend.store.image(ref)
        except ImageNotFound:
            return pull(self.backend.store, ref)

    def import_image(self, tarball: str | os.PathLike[str] | IO[bytes], ref: str, *,
                     changes: Sequence[str] = ()) -> Image:
        """A rootfs tarball as an image (``pydock import``); the same tarball gives the same
        image, so every xdist worker may call this: the store dedupes."""
        from pydock.changes import apply_changes
        config = apply_changes(ImageConfig(), changes)
        # native: into its store; docker: into the daemon (the same image config)
        into = self.backend.store if isinstance(self.backend, NativeBackend) else self.backend
        if isinstance(tarball, (str, os.PathLike)):
            with open(tarball, "rb") as f:
                return into.import_tar(f, config=config, ref=ref)
        return into.import_tar(tarball, config=config, ref=ref)

    # -- networks ---------------------------------------------------------------------------
    def network(self, name: str | None = None, *, subnet: str | None = None) -> str:
        """A new user network; returns its name (``NAME-<6 hex>``), to pass as ``network=``.

        Containers on it reach each other by container name and by ``aliases``; containers
        on other networks cannot reach them.  Each call makes a new one (a fixture may ask
        per test); they are removed at session end, or by the next session's sweep after a
        crash.
        """
        # unique in the session and across workers and sessions: a fixture may ask per test
        full = f"{name or 'pydock'}-{os.urandom(3).hex()}"
        net = self.backend.create_network(full, subnet=subnet,
                                          labels={"pydock.session": self.label})
        self._networks.append(net.name)
        return net.name

    # -- probes (shorthands so tests need only the fixture) ---------------------------------
    port = staticmethod(lambda port, proto="tcp": PortProbe(port, proto))
    log = staticmethod(lambda pattern: LogProbe(pattern))
    http = staticmethod(lambda port, path="/", status=200: HttpProbe(port, path, status))
    healthcheck = staticmethod(lambda: HealthcheckProbe())

    @staticmethod
    def command(*argv: str) -> ExecProbe:
        return ExecProbe(tuple(argv))

    # -- containers -------------------------------------------------------------------------
    @contextmanager
    def run(self, image: str | Image, command: Sequence[str] | str | None = None, *,
            env: Mapping[str, str] | None = None, volumes: Mapping[str, str] | None = None,
            tmpfs: Sequence[str] = (), network: str = "bridge", name: str | None = None,
            user: str | None = None, workdir: str | None = None, memory: int | None = None,
            pids_limit: int | None = None, init: bool = True, aliases: Sequence[str] = (),
            ready: Probe | Sequence[Probe] | None = None, timeout: float = 30.0,
            ports: Ports = (),
            ) -> Iterator[Container]:
        """A fresh container of ``image``, ready, removed (writable layer gone) on exit."""
        c = self.start(image, command, env=env, volumes=volumes, tmpfs=tmpfs, network=network,
                       name=name, user=user, workdir=workdir, memory=memory,
                       pids_limit=pids_limit, init=init, aliases=aliases, ready=ready,
                       timeout=timeout, ports=ports)
        try:
            yield c
        finally:
            self.finish(c)

    def start(self, image: str | Image, command: Sequence[str] | str | None = None, *,
              env: Mapping[str, str] | None = None, volumes: Mapping[str, str] | None = None,
              tmpfs: Sequence[str] = (), network: str = "bridge", name: str | None = None,
              user: str | None = None, workdir: str | None = None, memory: int | None = None,
              pids_limit: int | None = None, init: bool = True, aliases: Sequence[str] = (),
              ready: Probe | Sequence[Probe] | None = None, timeout: float = 30.0,
              ports: Ports = ()) -> Container:
        """Like ``run`` without the context: the caller calls ``finish``.

        ``network``: ``bridge`` (the default: its own address, see ``address``), ``none``,
        ``host`` or a network from ``pydock.network()``; ``aliases``: more names the other
        containers on that network reach it by.  ``ports``: container ports to publish on
        the host's 127.0.0.1 (``[8000, "53/udp"]``: a free host port each;
        ``{8000: 18000}``: that host port), see ``Container.address``."""
        from pydock.spec import parse_tmpfs
        if isinstance(command, str):
            command = ["/bin/sh", "-c", command]
        mounts = [Mount(target=t, source=os.path.abspath(s)) for s, t in (volumes or {}).items()]
        mounts += [parse_tmpfs(t) for t in tmpfs]
        opts = RunOptions(
            command=command, env=[f"{k}={v}" for k, v in (env or {}).items()],
            mounts=mounts, network=network, user=user, working_dir=workdir, memory=memory,
            pids_limit=pids_limit, init=init, network_aliases=tuple(aliases),
            ports=publish_specs(ports),
            name=f"{name}-{self.worker}" if name and self.worker else name,
            labels={"pydock.test": self.current_test or "",
                    # kept containers must survive the session: no session label for them
                    **({"pydock.session": self.label} if self.keep is Keep.NEVER
                       else {})})
        t = time.perf_counter()
        inner = self.backend.create(image, opts)
        ref = image if isinstance(image, str) else (image.tags[0] if image.tags else image.id)
        c = Container(inner, image=ref)
        record = Record(c, self.current_test, " ".join(inner.spec.argv))
        self.records.append(record)
        try:
            inner.start(detach=self.keep is not Keep.NEVER)
            if ready is not None:
                wait_ready(inner, [ready] if not isinstance(ready, Sequence) else ready,
                           timeout=timeout)
        except BaseException:
            self._snapshot(record)
            raise
        c.start_seconds = time.perf_counter() - t
        if self.on_started:
            self.on_started(c)
        return c

    def finish(self, c: Container, *, outcome: str | None = None) -> None:
        """Record its status and logs, then remove it (unless the keep policy says not).

        ``outcome``: how its test went (passed, failed, skipped), when known.
        """
        record = next((r for r in self.records if r.container is c), None)
        if record is None or record.removed:
            return
        self._snapshot(record)
        failed = outcome == "failed"
        if self.on_finished:
            self.on_finished(c, record.test, outcome)
        if self.keep is Keep.ALWAYS or (self.keep is Keep.FAILED and failed):
            self.kept.append(record)
            return
        c.native.remove(force=True, background=True)
        record.removed = True

    def _snapshot(self, record: Record) -> None:
        try:
            state = record.container.native.state()
            record.status = str(state.get("status", "created"))
            record.exit_code = state.get("exit_code")
            record.logs = last_log_lines(record.container.native)
        except Exception:  # noqa: BLE001 - a report must not fail the test run
            pass

    def containers_of(self, test: str) -> list[Record]:
        return [r for r in self.records if r.test == test]

    def median_start(self) -> float | None:
        times = [r.container.start_seconds for r in self.records if r.container.start_seconds]
        import statistics
        return statistics.median(times) if times else None

    def close(self) -> None:
        """Remove what the session still holds (kept containers stay) and stop the engine."""
        for record in self.records:
            if not record.removed and record not in self.kept:
                try:
                    record.container.native.remove(force=True)
                except Exception:  # noqa: BLE001 - best effort at session end
                    pass
                record.removed = True
        for net in self._networks:
            # Containers removed in the background may still hold addresses on it for a
            # moment; whatever is left, the next sweep removes (its session is over).
            deadline = time.monotonic() + 10
            while True:
                try:
                    self.backend.remove_network(net)
                    break
                except Exception as exc:  # noqa: BLE001 - best effort at session end
                    # both engines say "has active endpoints" while containers use it
                    if "active endpoints" not in str(exc) or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
        self.backend.close()


def _progress_line(context: str, sink: Callable[[str], None] | None
                   ) -> Callable[[int, int, str], None]:
    """Build progress as one line per step (``building CONTEXT: step 3/10 RUN make``)."""
    rel = os.path.relpath(context)
    shown = context if rel.startswith("..") else rel

    def step(number: int, total: int, text: str) -> None:
        if sink is not None:
            first = text.strip().splitlines()[0] if text.strip() else ""
            sink(f"pydock: building {shown}: step {number}/{total} {first[:60]}")

    return step


def _progress_reporter(context: str, sink: Callable[[str], None] | None) -> BuildReporter:
    """The native builder's reporter of those lines."""
    from pydock import BuildReporter

    line = _progress_line(context, sink)

    class ProgressReporter(BuildReporter):
        def step(self, number: int, total: int, text: str) -> None:
            line(number, total, text)

    return ProgressReporter()


def tar_of(files: Mapping[str, bytes | str]) -> bytes:
    """A tarball of ``{path: content}`` (helper for tests that import small images)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, data in files.items():
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(path)
            info.size = len(raw)
            info.mode = 0o755 if path.startswith(("bin/", "usr/bin/")) else 0o644
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


__all__ = ["Container", "Keep", "PydockSession", "tar_of"]
