"""Frozen data handed between pydock's stages: image references, image configs, images."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import UsageError

_NAME_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?)"
_NAME_RE = re.compile(rf"^(?:{_DOMAIN}/)?{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")


@dataclass(frozen=True)
class ImageRef:
    """A ``name[:tag]`` reference to an image; the tag defaults to ``latest``."""

    name: str
    tag: str = "latest"

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Parse ``name[:tag]`` as Docker does (a ``:port`` in the registry part is no tag)."""
        name, tag = text, "latest"
        slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > slash:
            name, tag = text[:colon], text[colon + 1 :]
        if not _NAME_RE.match(name):
            raise UsageError(
                f"invalid reference format: {text!r} (repository names are lowercase "
                "letters, digits and separators, e.g. myapp:1.0)"
            )
        if not _TAG_RE.match(tag):
            raise UsageError(f"invalid tag in reference {text!r}: {tag!r}")
        return cls(_familiar(name), tag)

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}"


def _familiar(name: str) -> str:
    """Docker's short form of a Docker Hub name: ``docker.io/library/busybox`` -> ``busybox``."""
    for hub in ("docker.io/", "index.docker.io/"):
        if name.startswith(hub):
            rest = name[len(hub):]
            library = rest.removeprefix("library/")
            return library if "/" not in library else rest
    return name


def _tuple_or_none(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an OCI image config (Docker's ``Config`` object)."""

    env: tuple[str, ...] = ()
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    working_dir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    volumes: tuple[str, ...] = ()
    stop_signal: str | None = None
    healthcheck: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    on_build: tuple[str, ...] = ()
    shell: tuple[str, ...] | None = None

    @property
    def labels_dict(self) -> dict[str, str]:
        return dict(self.labels)

    def env_dict(self) -> dict[str, str]:
        """The environment as a dict (later entries win)."""
        out: dict[str, str] = {}
        for item in self.env:
            key, _, value = item.partition("=")
            out[key] = value
        return out

    def with_env(self, key: str, value: str) -> ImageConfig:
        """A copy with ``key`` set (replacing an existing entry in place)."""
        env = [e for e in self.env if e.partition("=")[0] != key]
        if len(env) == len(self.env):
            return replace(self, env=(*self.env, f"{key}={value}"))
        return replace(
            self,
            env=tuple(
                f"{key}={value}" if e.partition("=")[0] == key else e for e in self.env
            ),
        )

    def to_docker(self) -> dict[str, Any]:
        """Docker's ``Config`` mapping (the names ``docker image inspect`` shows)."""
        return {
            "Env": list(self.env) or None,
            "Cmd": None if self.cmd is None else list(self.cmd),
            "Entrypoint": None if self.entrypoint is None else list(self.entrypoint),
            "WorkingDir": self.working_dir,
            "User": self.user,
            "ExposedPorts": {p: {} for p in self.exposed_ports} or None,
            "Labels": dict(self.labels) or None,
            "Volumes": {v: {} for v in self.volumes} or None,
            "StopSignal": self.stop_signal,
            "Healthcheck": self.healthcheck,
            "OnBuild": list(self.on_build) or None,
            "Shell": None if self.shell is None else list(self.shell),
        }

    def to_oci(self) -> dict[str, Any]:
        """The ``config`` member of an OCI image config (empty members left out)."""
        doc = self.to_docker()
        return {k: v for k, v in doc.items() if v not in (None, "", [], {})}

    @classmethod
    def from_oci(cls, doc: dict[str, Any] | None) -> ImageConfig:
        doc = doc or {}
        return cls(
            env=tuple(doc.get("Env") or ()),
            cmd=_tuple_or_none(doc.get("Cmd")),
            entrypoint=_tuple_or_none(doc.get("Entrypoint")),
            working_dir=doc.get("WorkingDir") or "",
            user=doc.get("User") or "",
            exposed_ports=tuple(sorted(doc.get("ExposedPorts") or {})),
            labels=tuple(sorted((doc.get("Labels") or {}).items())),
            volumes=tuple(sorted(doc.get("Volumes") or {})),
            stop_signal=doc.get("StopSignal") or None,
            healthcheck=doc.get("Healthcheck") or None,
            on_build=tuple(doc.get("OnBuild") or ()),
            shell=_tuple_or_none(doc.get("Shell")),
        )


@dataclass(frozen=True)
class Image:
    """An image in a store: its id (``sha256:`` of its config), config and layers."""

    id: str
    config: ImageConfig
    diff_ids: tuple[str, ...]
    created: str
    tags: tuple[str, ...] = ()
    architecture: str = "amd64"
    os: str = "linux"
    size: int = 0

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]


@dataclass(frozen=True)
class Mount:
    """A bind mount (``source`` on the host) or a tmpfs (``options`` like ``size=64m``)."""

    target: str
    kind: str = "bind"  # "bind" | "tmpfs"
    source: str = ""
    readonly: bool = False
    options: str = ""


@dataclass(frozen=True)
class PortSpec:
    """A published port (``-p``): container port and protocol, host address and port.

    ``host_port`` None: a free port is chosen at start (within ``host_port..host_port_end``
    when that is set).  ``parse_publish`` (ports.py) makes these from ``-p`` text.
    """

    container_port: int
    proto: str = "tcp"               # "tcp" | "udp"
    host_ip: str = "127.0.0.1"
    host_port: int | None = None
    host_port_end: int | None = None

    @property
    def key(self) -> str:
        """``"80/tcp"``: the ExposedPorts / NetworkSettings.Ports key."""
        return f"{self.container_port}/{self.proto}"


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create a container, validated (see spec.py)."""

    image_id: str
    image_name: str
    argv: tuple[str, ...]
    env: tuple[str, ...]
    working_dir: str = "/"
    user: str = ""
    hostname: str = ""
    name: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()
    network: str = "bridge"          # bridge (the default network), none, host, or a user network
    network_aliases: tuple[str, ...] = ()           # more names on a user network
    extra_hosts: tuple[tuple[str, str], ...] = ()   # --add-host (host, ip or "host-gateway")
    ports: tuple[PortSpec, ...] = ()                # -p / -P, resolved (none on host network)
    init: bool = False
    tty: bool = False
    stdin_open: bool = False
    auto_remove: bool = False
    memory: int | None = None
    pids_limit: int | None = None
    cpus: float | None = None
    stop_signal: str = "SIGTERM"
    stop_timeout: float = 10.0
    # What the user asked for, kept for inspect (Config.Cmd / Config.Entrypoint).
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ExitStatus:
    """How a container or exec ended: exit code (128+N for signal N) and OOM kill."""

    exit_code: int
    oom_killed: bool = False


@dataclass(frozen=True)
class ExecResult:
    """The outcome of a command run in a container."""

    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""

    @property
    def output(self) -> bytes:
        return self.stdout + self.stderr
