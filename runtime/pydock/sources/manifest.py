"""Image manifests and indexes (Docker schema2, OCI): parsing, platform choice, writing."""

from __future__ import annotations

import enum
import json
import platform as _platform
import re
from dataclasses import dataclass
from typing import Any

from ..errors import RegistryError, UsageError

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
           "application/vnd.docker.distribution.manifest.v1+prettyjws")
ACCEPT = ", ".join((OCI_INDEX, MANIFEST_LIST, OCI_MANIFEST, MANIFEST_V2))
INDEXES = (OCI_INDEX, MANIFEST_LIST)
MANIFESTS = (OCI_MANIFEST, MANIFEST_V2)
MAX_MANIFEST = 4 << 20  # Docker's limits
MAX_CONFIG = 8 << 20

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
         "armv7l": "arm", "armv6l": "arm", "i386": "386", "i686": "386"}
_VARIANT = {"aarch64": "v8", "arm64": "v8", "armv7l": "v7", "armv6l": "v6"}


class Compression(enum.Enum):
    """How a layer blob is compressed (from its media type)."""

    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


@dataclass(frozen=True)
class Platform:
    """``os/architecture[/variant]``, as in an index entry or ``--platform``."""

    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"invalid platform {text!r} (expected OS/ARCH[/VARIANT], "
                             "e.g. linux/amd64 or linux/arm/v7)")
        return cls(*parts)

    @classmethod
    def host(cls) -> Platform:
        machine = _platform.machine()
        return cls("linux", _ARCH.get(machine, machine.lower()), _VARIANT.get(machine, ""))

    def _variant(self) -> str:
        return "" if (self.architecture, self.variant) == ("arm64", "v8") else self.variant

    def score(self, other: Platform) -> int:
        """How well ``other`` (an index entry) fits: 0 not at all, 2 exactly."""
        if (other.os, other.architecture) != (self.os, self.architecture):
            return 0
        if self._variant() == other._variant():
            return 2
        return 1 if not other.variant or not self.variant else 0

    def to_json(self) -> dict[str, str]:
        doc = {"architecture": self.architecture, "os": self.os}
        return doc | ({"variant": self.variant} if self.variant else {})

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    """A pointer to a blob or manifest: media type, digest, size (and an entry's platform)."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None

    @classmethod
    def from_json(cls, doc: Any, what: str) -> Descriptor:
        try:
            digest, size = str(doc["digest"]), int(doc["size"])
            media_type = str(doc.get("mediaType") or "")
            plat = doc.get("platform")
            parsed = Platform(str(plat.get("os", "")), str(plat.get("architecture", "")),
                              str(plat.get("variant", ""))) if isinstance(plat, dict) else None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RegistryError(f"{what}: bad descriptor {doc!r} ({exc})") from None
        if not _DIGEST.fullmatch(digest):
            raise RegistryError(f"{what}: unsupported digest {digest!r} (only sha256 is)")
        if size < 0:
            raise RegistryError(f"{what}: negative size in descriptor of {digest}")
        return cls(media_type, digest, size, parsed)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"mediaType": self.media_type, "size": self.size,
                               "digest": self.digest}
        if self.platform is not None:
            doc["platform"] = self.platform.to_json()
        return doc

    @property
    def short(self) -> str:
        """The 12 hex digits Docker's progress lines show."""
        return self.digest.removeprefix("sha256:")[:12]


@dataclass(frozen=True)
class Manifest:
    """An image manifest: one config blob and the layer blobs, bottom first."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    """A manifest list / OCI index: one manifest per platform."""

    media_type: str
    manifests: tuple[Descriptor, ...]

    def select(self, want: Platform, what: str) -> Descriptor:
        """The entry for ``want`` (exact variant first); RegistryError naming what there is."""
        scored = [(want.score(d.platform), i, d) for i, d in enumerate(self.manifests)
                  if d.platform is not None and d.media_type not in INDEXES]
        best = max(scored, key=lambda s: (s[0], -s[1]), default=None)
        if best is None or best[0] == 0:
            have = ", ".join(sorted({str(d.platform) for d in self.manifests if d.platform}))
            raise RegistryError(f"{what}: no image for platform {want} (the index has: "
                                f"{have or 'no platforms'}); choose one with --platform")
        return best[2]


def parse(data: bytes, content_type: str, what: str) -> Manifest | Index:
    """Parse a manifest or index; the document's mediaType wins over the HTTP content type."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise RegistryError(f"{what}: the manifest is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{what}: the manifest is not a JSON object")
    media_type = str(doc.get("mediaType") or content_type.split(";")[0].strip())
    if media_type in SCHEMA1 or doc.get("schemaVersion") == 1:
        raise RegistryError(f"{what}: Docker schema 1 manifests are not supported (deprecated "
                            "since 2017; push the image again with a current Docker)")
    if media_type not in INDEXES + MANIFESTS:
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST if "layers" in doc else ""
    if not media_type:
        raise RegistryError(f"{what}: unsupported manifest type {content_type!r}")
    if media_type in INDEXES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise RegistryError(f"{what}: the index has no manifests list")
        return Index(media_type, tuple(Descriptor.from_json(e, what) for e in entries))
    layers = doc.get("layers")
    if not isinstance(layers, list) or "config" not in doc:
        raise RegistryError(f"{what}: the manifest has no config or no layers list")
    return Manifest(media_type, Descriptor.from_json(doc["config"], what),
                    tuple(Descriptor.from_json(layer, what) for layer in layers))


def compression(media_type: str, what: str) -> Compression:
    """The compression a layer media type names (Docker's, OCI's, nondistributable ones)."""
    if media_type.endswith(("+gzip", ".tar.gzip")) or media_type == DOCKER_LAYER:
        return Compression.GZIP
    if media_type.endswith("+zstd"):
        return Compression.ZSTD
    if media_type.endswith((".tar", "diff.tar")) or not media_type:
        return Compression.NONE
    raise RegistryError(f"{what}: unsupported layer media type {media_type!r}")


def encode(doc: dict[str, Any]) -> bytes:
    """Manifest JSON as Docker writes it (indented, key order kept)."""
    return json.dumps(doc, indent=3).encode()


def schema2(config: Descriptor, layers: list[Descriptor]) -> bytes:
    """A Docker schema2 manifest (what ``docker push`` uploads and every client pulls)."""
    return encode({"schemaVersion": 2, "mediaType": MANIFEST_V2, "config": config.to_json(),
                   "layers": [layer.to_json() for layer in layers]})


def oci_index(manifests: list[Descriptor]) -> bytes:
    """An OCI image index over per-platform manifests."""
    return encode({"schemaVersion": 2, "mediaType": OCI_INDEX,
                   "manifests": [m.to_json() for m in manifests]})
