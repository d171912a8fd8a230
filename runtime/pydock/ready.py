"""Readiness probes: wait until a container can serve, checked from inside it.

A probe looks at the container itself, so the image needs no tools: a listening port is read
from the kernel's socket table of the container's network namespace (``/proc/PID/net/tcp``),
an HTTP check connects from a thread that entered that namespace.  ``wait_ready`` polls the
probes, fails at once with the container's last log lines when it exits, and on timeout.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .errors import ContainerError, PydockError

if TYPE_CHECKING:
    from typing import TypeAlias

    from .backends.docker import DockerContainer
    from .backends.native.backend import NativeContainer

    AnyContainer: TypeAlias = NativeContainer | DockerContainer


class NotReady(ContainerError):
    """The container did not become ready (it exited, or the timeout passed)."""


class Probe(Protocol):
    def check(self, container: AnyContainer) -> bool: ...
    def describe(self) -> str: ...


def _listening_ports(pid: int) -> set[tuple[str, int]]:
    """(proto, port) of every listening TCP socket and bound UDP socket in pid's netns."""
    found = set()
    for proto, state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        try:
            with open(f"/proc/{pid}/net/{proto}") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == state:
                        found.add((proto.rstrip("6"), int(fields[1].rsplit(":", 1)[1], 16)))
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return found


def in_netns(pid: int, fn: Callable[[], object], timeout: float = 5.0) -> object:
    """Run ``fn`` in a short-lived thread that joined the network namespace of ``pid``."""
    from .backends.native import syscalls as sc

    result: dict[str, object] = {}

    def target() -> None:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                sc.setns(fd, sc.CLONE_NEWNET)
            finally:
                os.close(fd)
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result["error"] = exc

    t = threading.Thread(target=target, name="pydock-netns", daemon=True)
    t.start()
    t.join(timeout)
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result.get("value")


def _ports(container: AnyContainer) -> set[tuple[str, int]]:
    """The container's listening ports: its backend's own check when it has one (docker),
    else the socket table of the native container's network namespace."""
    own = getattr(container, "listening_ports", None)
    if own is not None:
        return set(own())
    pid = container.pid
    return _listening_ports(pid) if pid else set()


@dataclass(frozen=True)
class PortProbe:
    """A TCP port listening (or UDP port bound) inside the container."""

    port: int
    proto: str = "tcp"

    def check(self, container: AnyContainer) -> bool:
        return (self.proto, self.port) in _ports(container)

    def describe(self) -> str:
        return f"port {self.port}/{self.proto} listening"


@dataclass(frozen=True)
class LogProbe:
    """A line matching ``pattern`` (a regex) in the container's stdout or stderr."""

    pattern: str

    def check(self, container: AnyContainer) -> bool:
        return self.line(container) is not None

    def line(self, container: AnyContainer) -> str | None:
        """The first line of its output that matches, if any."""
        out, err = container.logs()
        rx = re.compile(self.pattern)
        return next((line for line in (out + b"\n" + err).decode(errors="replace").splitlines()
                     if rx.search(line)), None)

    def describe(self) -> str:
        return f"log line matching {self.pattern!r}"


@dataclass(frozen=True)
class ExecProbe:
    """A command that exits 0 inside the container."""

    command: tuple[str, ...]

    def check(self, container: AnyContainer) -> bool:
        return container.exec(list(self.command), timeout=10).exit_code == 0

    def describe(self) -> str:
        return f"command {' '.join(self.command)!r} succeeding"


@dataclass(frozen=True)
class HttpProbe:
    """An HTTP GET of ``path`` on ``port`` inside the container answering ``status``."""

    port: int
    path: str = "/"
    status: int | None = 200

    def check(self, container: AnyContainer) -> bool:
        if ("tcp", self.port) not in _ports(container):
            return False
        # docker: a host PID in its netns, or a clear error when the daemon is remote
        pid = getattr(container, "netns_pid", lambda: container.pid)()
        if not pid:
            return False
        import http.client  # (~20 ms with ssl: only for a test that uses this probe)

        def get() -> int:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", self.path)
                return conn.getresponse().status
            finally:
                conn.close()

        try:
            code = in_netns(pid, get)
        except (OSError, http.client.HTTPException):
            return False
        return code == self.status if self.status is not None else isinstance(code, int)

    def describe(self) -> str:
        return f"HTTP GET {self.path} on port {self.port} answering {self.status or 'anything'}"


@dataclass(frozen=True)
class HealthcheckProbe:
    """The image's HEALTHCHECK command succeeding (``CMD`` or ``CMD-SHELL`` form)."""

    def check(self, container: AnyContainer) -> bool:
        test = container.backend.image(container.spec.image_id).config.healthcheck
        command = (test or {}).get("Test") or []
        if not command or command[0] == "NONE":
            raise NotReady(f"container {container.name}: its image has no HEALTHCHECK")
        argv = ["/bin/sh", "-c", command[1]] if command[0] == "CMD-SHELL" else command[1:]
        return container.exec(argv, timeout=30).exit_code == 0

    def describe(self) -> str:
        return "the image's HEALTHCHECK passing"


def wait_ready(container: AnyContainer, probes: Sequence[Probe], *, timeout: float = 30.0,
               interval: float = 0.02) -> float:
    """Poll until every probe passes; returns the seconds it took.

    Raises NotReady at once when the container exits, or after ``timeout`` seconds; the
    message names the probes still failing and shows the container's last log lines.
    """
    start = time.monotonic()
    pending = list(probes)
    while True:
        try:
            pending = [p for p in pending if not p.check(container)]
        except PydockError:
            # a probe that needs the running container (its netns, an exec) fails once it
            # exited between two checks: that is the exit below, not the probe's error
            if container.state().get("status") == "running":
                raise
        if not pending:
            return time.monotonic() - start
        state = container.state()
        if state.get("status") != "running":
            raise NotReady(
                f"container {container.name} exited with status {state.get('exit_code')} "
                f"before it was ready (waiting for {_names(pending)})\n"
                f"{last_log_lines(container)}")
        if time.monotonic() - start > timeout:
            raise NotReady(
                f"container {container.name} not ready after {timeout:g} s: still waiting "
                f"for {_names(pending)}\n{last_log_lines(container)}")
        time.sleep(min(interval * (1 + (time.monotonic() - start)), 0.2))


def _names(probes: Sequence[Probe]) -> str:
    return ", ".join(p.describe() for p in probes)


def last_log_lines(container: AnyContainer, n: int = 20) -> str:
    out, err = container.logs()
    lines = [f"  {line}" for line in (out + err).decode(errors="replace").splitlines()[-n:]]
    return "last log lines:\n" + "\n".join(lines) if lines else "(no log output)"


__all__ = ["ExecProbe", "HealthcheckProbe", "HttpProbe", "LogProbe", "NotReady", "PortProbe",
           "Probe", "in_netns", "last_log_lines", "wait_ready"]
