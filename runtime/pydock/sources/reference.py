"""Registry references: ``[domain/]path[:tag][@digest]`` normalized as Docker does."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..errors import UsageError

DOCKER_HUB = "docker.io"
_HUB_API = "registry-1.docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN_RE = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9-]+)*|\[[0-9a-fA-F:.]+\])"
    r"(?::[0-9]+)?"
)
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class RegistryRef:
    """An image in a registry: ``docker.io`` / ``library/busybox`` / tag ``latest``."""

    domain: str
    repository: str
    tag: str | None = "latest"
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> RegistryRef:
        """Parse a reference; ``busybox`` means ``docker.io/library/busybox:latest``."""
        name, _, digest = text.partition("@")
        tag: str | None = None
        colon, slash = name.rfind(":"), name.rfind("/")
        if colon > slash:
            name, tag = name[:colon], name[colon + 1:]
        domain, path = _split_domain(name)
        if not _DOMAIN_RE.fullmatch(domain) or not _PATH_RE.fullmatch(path):
            raise UsageError(
                f"invalid reference format: {text!r} (expected [REGISTRY/]NAME[:TAG][@DIGEST], "
                "names in lowercase, e.g. 127.0.0.1:5000/myapp:1.0)"
            )
        if tag is not None and not _TAG_RE.fullmatch(tag):
            raise UsageError(f"invalid tag in reference {text!r}: {tag!r}")
        if digest and not _DIGEST_RE.fullmatch(digest):
            raise UsageError(f"invalid digest in reference {text!r}: {digest!r} "
                             "(expected sha256:<64 hex digits>)")
        if tag is None and not digest:
            tag = "latest"
        return cls(domain, path, tag, digest or None)

    @property
    def reference(self) -> str:
        """What the manifest URL names: the digest if there is one, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def api_host(self) -> str:
        """The host[:port] that serves the registry API (Docker Hub's differs from its name)."""
        return api_host(self.domain)

    @property
    def name(self) -> str:
        """``domain/repository`` (``docker.io/library/busybox``)."""
        return f"{self.domain}/{self.repository}"

    @property
    def familiar_name(self) -> str:
        """The name Docker shows: ``busybox``, ``user/app``, ``127.0.0.1:5000/app``."""
        if self.domain != DOCKER_HUB:
            return self.name
        short = self.repository.removeprefix("library/")
        return short if "/" not in short else self.repository

    @property
    def local_tag(self) -> str | None:
        """The store tag a pull by tag sets (``busybox:latest``); None for a pull by digest."""
        if self.digest or not self.tag:
            return None
        return f"{self.familiar_name}:{self.tag}"

    def is_loopback(self) -> bool:
        """Whether the registry is on this machine (plain http is allowed there)."""
        return is_loopback(self.domain)

    def with_reference(self, *, tag: str | None = None, digest: str | None = None) -> RegistryRef:
        return RegistryRef(self.domain, self.repository, tag, digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag and not self.digest:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _split_domain(name: str) -> tuple[str, str]:
    """Docker's rule: the first component is a registry if it has a dot, a colon, is
    ``localhost`` or has upper case letters; else the name is on Docker Hub."""
    first, sep, rest = name.partition("/")
    if sep and (any(c in first for c in ".:[") or first == "localhost" or first != first.lower()):
        domain, path = first, rest
    else:
        domain, path = DOCKER_HUB, name
    if domain == "index.docker.io":
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return domain, path


def api_host(domain: str) -> str:
    """Where the registry ``domain`` serves its API (``docker.io``: ``registry-1.docker.io``)."""
    return _HUB_API if domain == DOCKER_HUB else domain


def host_of(domain: str) -> str:
    """The host part of ``host[:port]`` (IPv6 brackets removed)."""
    if domain.startswith("["):
        return domain[1:domain.index("]")]
    return domain.rpartition(":")[0] if ":" in domain else domain


def is_loopback(domain: str) -> bool:
    """``localhost``, 127.0.0.0/8 and ::1, with or without a port."""
    host = host_of(domain)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
