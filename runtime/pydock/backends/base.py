"""The Backend and Container protocols every backend implements (native, docker)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..models import ExecResult, ExitStatus, Image


class Status(enum.Enum):
    """A container's lifecycle state; allowed moves are in TRANSITIONS."""

    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    REMOVED = "removed"


TRANSITIONS = {
    Status.CREATED: {Status.RUNNING, Status.REMOVED, Status.CREATED},
    Status.RUNNING: {Status.EXITED},
    Status.EXITED: {Status.RUNNING, Status.REMOVED},
    Status.REMOVED: set(),
}


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, so callers never guess from its name."""

    exec: bool = True
    commit: bool = True
    oom_detection: bool = True
    host_network: bool = True
    # The host can read and enter a container's network namespace (probes check ports and
    # HTTP from inside, without tools in the image): native, and docker with a local daemon.
    netns_access: bool = True
    # Delay, loss, rate of a running container's traffic (set_faults/clear_faults, in its
    # network namespace: faults.py): native, and docker with a local daemon (as root).
    network_faults: bool = True


class Container(Protocol):
    id: str
    name: str

    @property
    def status(self) -> Status: ...
    def start(self) -> None: ...
    def wait(self, timeout: float | None = None) -> ExitStatus: ...
    def stop(self, timeout: float | None = None) -> None: ...
    def kill(self, signal: str | int = "SIGKILL") -> None: ...
    def remove(self, *, force: bool = False) -> None: ...
    def exec(self, argv: Sequence[str], *, env: Sequence[str] = (), user: str | None = None,
             workdir: str | None = None, stdin: bytes | None = None) -> ExecResult: ...
    def logs(self) -> tuple[bytes, bytes]: ...
    def inspect(self) -> dict[str, Any]: ...


class Backend(Protocol):
    name: str
    capabilities: Capabilities

    def image(self, ref: str) -> Image: ...
    def create(self, image: str | Image, **options: Any) -> Container: ...
    def container(self, ref: str) -> Container: ...
    def containers(self, *, all: bool = False) -> list[Container]: ...
    def close(self) -> None: ...
