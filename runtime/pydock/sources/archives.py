"""Image archives: ``docker save`` tars (any Docker version) and OCI image layouts, in and out.

``save_images`` writes what Docker 25+ writes: ``blobs/sha256/<hex>`` for layers, configs and
OCI manifests, ``manifest.json`` (Config, RepoTags, Layers) for ``docker load`` of every
version, ``repositories``, and ``index.json`` + ``oci-layout`` so the tar is an OCI image
layout too.  Layers are written as uncompressed tars, one at a time through a temporary file
(a tar member's size comes before its data).

``load_images`` reads a docker archive (20.10's ``<id>/layer.tar`` + ``<id>.json``, 25+'s
``blobs/sha256``; links between members are followed inside the archive) or a plain OCI image
layout (``index.json`` -> manifest, or an index from which the host's platform is picked;
gzip layers).  Every digest the archive names is checked, and every layer against the
config's ``rootfs.diff_ids``.  Config bytes are stored unchanged, so an image keeps Docker's id.
A seekable uncompressed tar is read in place; a stream (stdin, a compressed archive) is
spooled to the store's ``tmp/`` first, as its member order is arbitrary.  A bad archive
raises one ``ArchiveError`` naming it, and leaves the store as it was.

Image ids across a save: a layer the store made itself re-tars to its diff_id, so an image
built, committed or loaded from a pydock archive keeps its id.  A layer imported from a
foreign tar (``docker save`` output, ``pydock import``) re-tars to other bytes; the saved
config then lists the new diff_ids, so the image gets a new id in the archive (the files,
config and history are unchanged).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import lzma
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

from ..errors import ArchiveError, ImageNotFound, LayerError, PydockError, StoreError, UsageError
from ..models import Image, ImageRef
from ..store import Store, _architecture, short_name

MANIFEST = "manifest.json"
INDEX = "index.json"
OCI_LAYOUT = "oci-layout"
REPOSITORIES = "repositories"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
_INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
_MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
_CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"  # written by Docker 25+ and containerd

_CHUNK = 1 << 20
_JSON_LIMIT = 32 << 20
_MAX_LINKS = 16
_MAX_NESTING = 4
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_BLOB_PATH = re.compile(r"blobs/sha256/([0-9a-f]{64})")
_LEGACY_CONFIG = re.compile(r"([0-9a-f]{64})\.json")
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")
_INPUT_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError, ValueError)
_EOFHeaderError: type[Exception] = tarfile.EOFHeaderError  # type: ignore[attr-defined]
_EmptyHeaderError: type[Exception] = tarfile.EmptyHeaderError  # type: ignore[attr-defined]


@dataclass(frozen=True)
class LoadedImage:
    """An image ``load_images`` put into the store, with the names the archive gave it."""

    image: Image
    refs: tuple[str, ...] = ()
    #: (name, id of the image it named before) for tags this load moved, as docker reports them
    replaced: tuple[tuple[str, str], ...] = ()


# -- reading the archive ---------------------------------------------------------------------


class _BadTar(Exception):
    """The outer tar is not a tar, is truncated or has a bad header."""


class _StrictTarInfo(tarfile.TarInfo):
    """A bad header is corruption and a missing end-of-archive marker truncation (tarfile
    would silently stop reading there)."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(tarfile_)
        except _EOFHeaderError:
            raise
        except _EmptyHeaderError:
            if tarfile_.offset == 0:
                raise _BadTar("empty file") from None
            raise _BadTar("truncated (no end-of-archive marker)") from None
        except tarfile.HeaderError as exc:
            if tarfile_.offset == 0:
                raise _BadTar(f"not a tar archive ({exc})") from None
            raise _BadTar(f"bad tar header at offset {tarfile_.offset}: {exc}") from None


def _entry_name(name: str, source: str) -> str:
    """An archive member's path, normalised; absolute paths and ``..`` are refused."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise ArchiveError(f"{source}: the entry {name!r} points outside the archive: refusing it")
    return "/".join(parts)


def _link_target(base: str, target: str, source: str, what: str) -> str:
    """The archive path a link at ``base`` (a directory path) points to, kept inside."""
    if target.startswith("/"):
        raise ArchiveError(f"{source}: {what} points outside the archive: refusing it")
    parts: list[str] = [p for p in base.split("/") if p]
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise ArchiveError(f"{source}: {what} points outside the archive: refusing it")
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


class _Members:
    """The regular files of an image archive by path; links are followed inside the archive."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._files: dict[str, Any] = {}
        self._links: dict[str, str] = {}

    def _record(self, info: tarfile.TarInfo) -> str | None:
        """Check ``info``'s path; note a link; return the path of a regular file to keep."""
        name = _entry_name(info.name, self.source)
        what = f"the link {info.name!r} -> {info.linkname!r}"
        if info.issym():
            self._links[name] = _link_target(posixpath.dirname(name), info.linkname,
                                             self.source, what)
        elif info.islnk():
            self._links[name] = _link_target("", info.linkname, self.source, what)
        elif info.isreg():
            self._links.pop(name, None)
            return name
        return None

    def _resolve(self, name: str) -> str:
        for _ in range(_MAX_LINKS):
            if name not in self._links:
                return name
            name = self._links[name]
        raise ArchiveError(f"{self.source}: too many levels of links at {name!r}")

    def has(self, name: str) -> bool:
        return self._resolve(name) in self._files

    @contextlib.contextmanager
    def open(self, name: str, *, what: str) -> Iterator[IO[bytes]]:
        real = self._resolve(name)
        if real not in self._files:
            raise ArchiveError(f"{self.source}: {what} {name!r} is missing from the archive")
        with self._open(self._files[real]) as f:
            yield f

    def read(self, name: str, *, what: str) -> bytes:
        with self.open(name, what=what) as f:
            try:
                data = f.read(_JSON_LIMIT + 1)
            except _INPUT_ERRORS as exc:
                raise ArchiveError(f"{self.source}: cannot read {name!r}: {exc}") from exc
        if len(data) > _JSON_LIMIT:
            raise ArchiveError(f"{self.source}: {what} {name!r} is too large for a JSON document")
        return data

    def read_json(self, name: str, *, what: str) -> Any:
        try:
            return json.loads(self.read(name, what=what))
        except ValueError as exc:
            raise ArchiveError(f"{self.source}: {what} {name!r} is not valid JSON: {exc}") from None

    def _open(self, handle: Any) -> IO[bytes]:
        raise NotImplementedError


class _TarInPlace(_Members):
    """A seekable uncompressed tar: members are read where they are."""

    def __init__(self, fileobj: IO[bytes], source: str) -> None:
        super().__init__(source)
        try:
            self._tar = tarfile.open(  # type: ignore[call-overload]
                fileobj=fileobj, mode="r:", tarinfo=_StrictTarInfo)
            for info in self._tar:
                name = self._record(info)
                if name is not None:
                    self._files[name] = info
        except (_BadTar, *_INPUT_ERRORS) as exc:
            raise ArchiveError(f"{source}: corrupt image archive: {exc}") from None

    def _open(self, handle: Any) -> IO[bytes]:
        f = self._tar.extractfile(handle)
        assert f is not None  # a regular member
        return f


class _TarSpooled(_Members):
    """A tar stream (stdin, compressed): regular members copied to files in ``spool``."""

    def __init__(self, fileobj: IO[bytes], source: str, spool: Path) -> None:
        super().__init__(source)
        info: tarfile.TarInfo | None = None
        numbers = itertools.count()
        try:
            with tarfile.open(  # type: ignore[call-overload]
                fileobj=fileobj, mode="r|*", tarinfo=_StrictTarInfo
            ) as tar:
                while (info := tar.next()) is not None:
                    tar.members.clear()  # type: ignore[attr-defined]
                    name = self._record(info)
                    if name is not None:
                        path = spool / str(next(numbers))
                        self._copy(tar, info, path)
                        self._files[name] = path
        except (_BadTar, *_INPUT_ERRORS) as exc:
            where = f" (after the entry {info.name!r})" if info is not None else ""
            raise ArchiveError(f"{source}: corrupt image archive: {exc}{where}") from None

    def _copy(self, tar: tarfile.TarFile, info: tarfile.TarInfo, path: Path) -> None:
        src = tar.extractfile(info)
        assert src is not None
        try:
            out = open(path, "xb")
        except OSError as exc:
            raise StoreError(f"cannot spool the archive to {path.parent}: {exc}") from exc
        with out:
            while chunk := src.read(_CHUNK):  # input errors propagate as such
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise StoreError(f"cannot spool the archive to {path.parent}: {exc}") from exc

    def _open(self, handle: Any) -> IO[bytes]:
        return open(handle, "rb")


def _is_compressed(magic: bytes) -> bool:
    return any(magic.startswith(m) for m in _COMPRESSED_MAGIC)


def _members(fileobj: IO[bytes], source: str, store: Store, stack: contextlib.ExitStack) -> _Members:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if fileobj.seekable():
            start = fileobj.tell()
            magic = fileobj.read(6)
            fileobj.seek(start)
            if not _is_compressed(magic):
                return _TarInPlace(fileobj, source)
    spool = Path(tempfile.mkdtemp(prefix=f"load-{os.getpid()}-", dir=store.tmp_dir))
    stack.callback(shutil.rmtree, spool, ignore_errors=True)
    return _TarSpooled(fileobj, source, spool)


# -- planning: what to load, checked before anything is written ----------------------------


@dataclass(frozen=True)
class _Layer:
    member: str
    diff_id: str
    digest: str | None = None  # the blob's own digest, where the archive names one
    size: int | None = None


@dataclass(frozen=True)
class _Plan:
    config: bytes
    layers: tuple[_Layer, ...]
    refs: tuple[str, ...] = ()

    @property
    def image_id(self) -> str:
        return "sha256:" + hashlib.sha256(self.config).hexdigest()


@dataclass(frozen=True)
class _Descriptor:
    """An OCI content descriptor, checked."""

    media_type: str
    digest: str
    size: int | None
    annotations: dict[str, str] = field(default_factory=dict)
    platform: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: Any, source: str, where: str) -> _Descriptor:
        if not isinstance(value, dict):
            raise ArchiveError(f"{source}: {where} is not a descriptor object")
        digest, size = value.get("digest"), value.get("size")
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise ArchiveError(f"{source}: {where} has an unsupported digest {digest!r} "
                               "(expected sha256:<64 hex>)")
        if size is not None and (not isinstance(size, int) or size < 0):
            raise ArchiveError(f"{source}: {where} has an invalid size {size!r}")
        annotations = value.get("annotations") or {}
        platform = value.get("platform") or {}
        return cls(str(value.get("mediaType") or ""), digest, size,
                   annotations if isinstance(annotations, dict) else {},
                   platform if isinstance(platform, dict) else {})

    @property
    def path(self) -> str:
        return "blobs/sha256/" + self.digest.removeprefix("sha256:")


def _check_digest(source: str, name: str, data: bytes, digest: str | None, size: int | None) -> None:
    if size is not None and len(data) != size:
        raise ArchiveError(f"{source}: {name!r} has {len(data)} bytes, its descriptor says {size}")
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if digest is not None and actual != digest:
        raise ArchiveError(f"{source}: {name!r} does not match its digest: expected {digest}, "
                           f"got {actual}")


def _named_digest(path: str) -> str | None:
    """The digest a member's path names (``blobs/sha256/<hex>``, a legacy ``<hex>.json``)."""
    match = _BLOB_PATH.fullmatch(path) or _LEGACY_CONFIG.fullmatch(path)
    return f"sha256:{match.group(1)}" if match else None


def _diff_ids(source: str, name: str, raw: bytes) -> list[str]:
    """The config's ``rootfs.diff_ids``, checked (and its ``os``: only linux images run here)."""
    try:
        doc = json.loads(raw)
        diff_ids = doc["rootfs"]["diff_ids"] or []
    except (ValueError, KeyError, TypeError) as exc:
        raise ArchiveError(f"{source}: {name!r} is not an image config ({exc})") from None
    if not isinstance(diff_ids, list) or not all(
        isinstance(d, str) and _DIGEST.fullmatch(d) for d in diff_ids
    ):
        raise ArchiveError(f"{source}: {name!r} has invalid rootfs.diff_ids")
    os_name = doc.get("os") if isinstance(doc, dict) else None
    if os_name not in (None, "", "linux"):
        raise ArchiveError(f"{source}: {name!r} is a {os_name} image: only linux images load here")
    return diff_ids


def _familiar(text: str) -> str:
    """Docker's short form of a reference: ``docker.io/library/busybox:1`` -> ``busybox:1``."""
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/",
                   "index.docker.io/"):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def _qualified(name: str) -> str:
    """The full form of a repository name, as Docker writes it into ``index.json``."""
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return name
    return f"docker.io/{name}" if rest else f"docker.io/library/{name}"


def _ref(source: str, text: Any, where: str) -> str:
    if not isinstance(text, str):
        raise ArchiveError(f"{source}: {where} names an invalid reference {text!r}")
    try:
        return str(ImageRef.parse(_familiar(text)))
    except UsageError as exc:
        raise ArchiveError(f"{source}: {where}: {exc}") from None


def _plan_docker(members: _Members) -> list[_Plan]:
    """The images a ``docker save`` archive's manifest.json lists."""
    src = members.source
    doc = members.read_json(MANIFEST, what="the manifest")
    if not isinstance(doc, list):
        raise ArchiveError(f"{src}: {MANIFEST} is not a list of images")
    plans = []
    for n, item in enumerate(doc, 1):
        where = f"{MANIFEST} entry {n}"
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str):
            raise ArchiveError(f"{src}: {where} has no Config")
        config_path = _entry_name(item["Config"], src)
        raw = members.read(config_path, what=f"the image config of {where}")
        _check_digest(src, config_path, raw, _named_digest(config_path), None)
        diff_ids = _diff_ids(src, config_path, raw)
        paths = item.get("Layers") or []
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ArchiveError(f"{src}: {where} has an invalid Layers list")
        if len(paths) != len(diff_ids):
            raise ArchiveError(f"{src}: {where} lists {len(paths)} layers, its config "
                               f"{config_path!r} has {len(diff_ids)} diff_ids")
        layers = []
        for path, diff_id in zip(paths, diff_ids, strict=True):
            path = _entry_name(path, src)
            if not members.has(path):
                raise ArchiveError(f"{src}: the layer {path!r} of {where} is missing from the "
                                   "archive")
            layers.append(_Layer(path, diff_id, _named_digest(path)))
        tags = item.get("RepoTags") or []
        if not isinstance(tags, list):
            raise ArchiveError(f"{src}: {where} has an invalid RepoTags list")
        refs = tuple(_ref(src, t, f"{where} RepoTags") for t in tags)
        plans.append(_Plan(raw, tuple(layers), refs))
    return plans


def _plan_oci(members: _Members) -> list[_Plan]:
    """The images an OCI image layout's index.json names (the host's platform of an index)."""
    src = members.source
    if members.has(OCI_LAYOUT):
        layout = members.read_json(OCI_LAYOUT, what="the layout marker")
        if not isinstance(layout, dict) or not isinstance(layout.get("imageLayoutVersion"), str):
            raise ArchiveError(f"{src}: {OCI_LAYOUT} has no imageLayoutVersion")
    index = members.read_json(INDEX, what="the image index")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise ArchiveError(f"{src}: {INDEX} has no manifests list")
    plans = []
    for n, value in enumerate(index["manifests"], 1):
        desc = _Descriptor.parse(value, src, f"{INDEX} manifest {n}")
        plan = _plan_descriptor(members, desc, f"{INDEX} manifest {n}", 0)
        if plan is not None:
            ref = _oci_ref(src, desc.annotations, f"{INDEX} manifest {n}")
            plans.append(_Plan(plan.config, plan.layers, (ref,) if ref else ()))
    return plans


def _oci_ref(source: str, annotations: dict[str, str], where: str) -> str | None:
    """The image name in a descriptor's annotations: containerd's full name, else
    ``org.opencontainers.image.ref.name`` when it has a repository (a bare tag has none)."""
    name = annotations.get(ANNOTATION_IMAGE_NAME)
    if isinstance(name, str) and name and "@" not in name:
        return _ref(source, name, where)
    ref = annotations.get(ANNOTATION_REF_NAME)
    if isinstance(ref, str) and ("/" in ref or ":" in ref) and "@" not in ref:
        return _ref(source, ref, where)
    return None


def _read_blob(members: _Members, desc: _Descriptor, what: str) -> bytes:
    data = members.read(desc.path, what=what)
    _check_digest(members.source, desc.path, data, desc.digest, desc.size)
    return data


def _plan_descriptor(members: _Members, desc: _Descriptor, where: str, depth: int) -> _Plan | None:
    src = members.source
    if desc.media_type in _INDEX_TYPES:
        if depth >= _MAX_NESTING:
            raise ArchiveError(f"{src}: image indexes nest too deep at {desc.path!r}")
        index = _json(src, desc.path, _read_blob(members, desc, f"the index of {where}"))
        chosen = _pick_platform(src, desc.path, index.get("manifests"))
        return _plan_descriptor(members, chosen, f"{desc.path!r}", depth + 1)
    if desc.media_type and desc.media_type not in _MANIFEST_TYPES:
        return None  # not an image (an attestation, an artifact)
    manifest = _json(src, desc.path, _read_blob(members, desc, f"the manifest of {where}"))
    if manifest.get("mediaType") in _INDEX_TYPES or "manifests" in manifest:
        return _plan_descriptor(members, _Descriptor(
            OCI_INDEX, desc.digest, desc.size), where, depth)
    config = _Descriptor.parse(manifest.get("config"), src, f"the config of {desc.path!r}")
    if config.media_type and config.media_type not in _CONFIG_TYPES:
        return None
    raw = _read_blob(members, config, f"the image config of {desc.path!r}")
    diff_ids = _diff_ids(src, config.path, raw)
    values = manifest.get("layers") or []
    if not isinstance(values, list) or len(values) != len(diff_ids):
        raise ArchiveError(f"{src}: the manifest {desc.path!r} lists "
                           f"{len(values) if isinstance(values, list) else 'no'} layers, its "
                           f"config has {len(diff_ids)} diff_ids")
    layers = []
    for n, (value, diff_id) in enumerate(zip(values, diff_ids, strict=True), 1):
        layer = _Descriptor.parse(value, src, f"layer {n} of {desc.path!r}")
        if "zstd" in layer.media_type:
            raise ArchiveError(f"{src}: layer {layer.digest} is zstd-compressed, which pydock "
                               "cannot read (decompress it first)")
        if not members.has(layer.path):
            raise ArchiveError(f"{src}: the layer blob {layer.path!r} of {desc.path!r} is "
                               "missing from the archive")
        layers.append(_Layer(layer.path, diff_id, layer.digest, layer.size))
    return _Plan(raw, tuple(layers))


def _json(source: str, name: str, data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise ArchiveError(f"{source}: {name!r} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ArchiveError(f"{source}: {name!r} is not a JSON object")
    return doc


def _pick_platform(source: str, where: str, values: Any) -> _Descriptor:
    """The host's (linux/<arch>) manifest of an image index."""
    if not isinstance(values, list):
        raise ArchiveError(f"{source}: the index {where!r} has no manifests list")
    descs = [_Descriptor.parse(v, source, f"manifest {n} of {where!r}")
             for n, v in enumerate(values, 1)]
    host = ("linux", _architecture())
    for desc in descs:
        if (desc.platform.get("os"), desc.platform.get("architecture")) == host:
            return desc
    found = ", ".join(sorted({f"{d.platform.get('os')}/{d.platform.get('architecture')}"
                              for d in descs})) or "none"
    raise ArchiveError(f"{source}: the index {where!r} has no image for {host[0]}/{host[1]} "
                       f"(it has: {found})")


def _plan(members: _Members) -> list[_Plan]:
    if members.has(MANIFEST):
        plans = _plan_docker(members)
    elif members.has(INDEX):
        plans = _plan_oci(members)
    else:
        raise ArchiveError(f"{members.source}: neither {MANIFEST} nor {INDEX} in the archive: "
                           "not a docker save archive or an OCI image layout")
    merged: dict[str, _Plan] = {}
    for plan in plans:  # one image named twice (one entry per tag): one plan, all its names
        prev = merged.get(plan.image_id)
        refs = tuple(dict.fromkeys((prev.refs if prev else ()) + plan.refs))
        merged[plan.image_id] = _Plan(plan.config, plan.layers, refs)
    return list(merged.values())


# -- loading: layers, then configs and tags; undone on failure -----------------------------


class _HashingRaw(io.RawIOBase):
    """Counts and hashes the bytes read through it (a blob's digest, checked afterwards)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.hash = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        n = len(data)
        memoryview(buffer).cast("B")[:n] = data
        self.hash.update(data)
        self.count += n
        return n


@dataclass
class _Undo:
    """What a load added so far, to remove again if it fails."""

    pinned: list[str] = field(default_factory=list)
    new_layers: list[str] = field(default_factory=list)
    new_images: list[str] = field(default_factory=list)

    def run(self, store: Store) -> None:
        """Remove the new images and the new layers nothing else uses; best effort (the
        caller is already raising)."""
        with contextlib.suppress(PydockError, OSError), store.lock():
            for image_id in self.new_images:
                with contextlib.suppress(PydockError):
                    store.remove_image(image_id, force=True)
            # The store has no public "unpin, then drop if unused" yet: use its gc helpers.
            for diff_id in self.pinned:
                store._pin(diff_id).unlink(missing_ok=True)
            referenced = store._referenced_layers()
            for diff_id in dict.fromkeys(self.new_layers):
                if short_name(diff_id) not in referenced:
                    store._discard_layer(short_name(diff_id))


def _load_layer(store: Store, members: _Members, layer: _Layer, undo: _Undo) -> None:
    src = members.source
    existed = store.has_layer(layer.diff_id)
    with members.open(layer.member, what="the layer") as f:
        raw = _HashingRaw(f)
        try:
            store.add_layer_tar(io.BufferedReader(raw, _CHUNK), expected_diff_id=layer.diff_id)
        except LayerError as exc:
            raise ArchiveError(f"{src}: layer {layer.member!r}: {exc}") from exc
        undo.pinned.append(layer.diff_id)
        if not existed:
            undo.new_layers.append(layer.diff_id)
        if raw.count == 0 and existed:
            return  # the store had it: the archive's copy was not needed
        try:
            while raw.read(_CHUNK):
                pass
        except _INPUT_ERRORS as exc:
            raise ArchiveError(f"{src}: cannot read layer {layer.member!r}: {exc}") from exc
    digest = "sha256:" + raw.hash.hexdigest()
    if layer.digest is not None and digest != layer.digest:
        raise ArchiveError(f"{src}: layer {layer.member!r} does not match its digest: expected "
                           f"{layer.digest}, got {digest}")
    if layer.size is not None and raw.count != layer.size:
        raise ArchiveError(f"{src}: layer {layer.member!r} has {raw.count} bytes, its "
                           f"descriptor says {layer.size}")


def _commit(store: Store, members: _Members, plans: list[_Plan]) -> list[LoadedImage]:
    undo = _Undo()
    try:
        for plan in plans:
            for layer in plan.layers:
                _load_layer(store, members, layer, undo)
        loaded = []
        with store.lock():
            for plan in plans:
                if not (store.images_dir / f"{plan.image_id[7:]}.json").exists():
                    undo.new_images.append(plan.image_id)
                store.add_image_config(plan.config)
            targets = {tag: image.id for image in store.images() for tag in image.tags}
            for plan in plans:
                replaced = []
                for ref in plan.refs:
                    previous = targets.get(ref)
                    if previous is not None and previous != plan.image_id:
                        replaced.append((ref, previous))
                    store.tag(plan.image_id, ref)
                    targets[ref] = plan.image_id
                loaded.append((plan, tuple(replaced)))
        return [LoadedImage(store.image(plan.image_id), plan.refs, replaced)
                for plan, replaced in loaded]
    except BaseException:
        undo.run(store)
        raise


def load_images(store: Store, fileobj: IO[bytes], *, source: str | None = None) -> list[LoadedImage]:
    """Load every image of a ``docker save`` archive or OCI image layout tar into ``store``.

    ``fileobj`` is read once, front to back when it is not seekable; ``source`` names it in
    errors (default: its ``name``).  Returns the images in archive order with the names the
    archive gave them (now tags).  Raises ``ArchiveError`` for a bad archive, with the store
    unchanged.
    """
    name = source or str(getattr(fileobj, "name", "") or "the image archive")
    stack = contextlib.ExitStack()
    try:
        members = _members(fileobj, name, store, stack)
        return _commit(store, members, _plan(members))
    finally:
        stack.close()


# -- saving ----------------------------------------------------------------------------------


def _name_only(ref: str) -> bool:
    """``busybox`` (every tag of it, as docker saves) rather than ``busybox:1`` or an id."""
    return not ref.startswith("sha256:") and "@" not in ref and ":" not in ref.rpartition("/")[2]


def _select(store: Store, refs: Sequence[str]) -> dict[str, list[str]]:
    """Image id -> the tags to record for it, in the order the refs name them."""
    if not refs:
        raise UsageError("save needs at least one image")
    chosen: dict[str, list[str]] = {}
    for ref in refs:
        if _name_only(ref):
            with contextlib.suppress(UsageError):
                repo = ImageRef.parse(ref).name
                tagged = [(image.id, tag) for image in store.images() for tag in image.tags
                          if tag.rpartition(":")[0] == repo]
                for image_id, tag in sorted(tagged, key=lambda it: it[1]):
                    chosen.setdefault(image_id, []).append(tag)
                if tagged:
                    continue
        image = store.image(ref)
        tags = chosen.setdefault(image.id, [])
        with contextlib.suppress(UsageError):
            name = str(ImageRef.parse(ref))
            if name in image.tags and not ref.startswith("sha256:") and name not in tags:
                tags.append(name)
    return chosen


class _Writer:
    """Adds files to the output tar with fixed metadata (the same images give the same bytes)."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.names: set[str] = set()

    def _info(self, name: str, kind: bytes, size: int = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.size, info.mtime = kind, size, 0
        info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        return info

    def add(self, name: str, fileobj: IO[bytes], size: int) -> None:
        if name in self.names:
            return
        head = ""
        for part in name.split("/")[:-1]:
            head = f"{head}{part}/"
            if head not in self.names:
                self.names.add(head)
                self.tar.addfile(self._info(head, tarfile.DIRTYPE))
        self.names.add(name)
        self.tar.addfile(self._info(name, tarfile.REGTYPE, size), fileobj)

    def add_bytes(self, name: str, data: bytes) -> None:
        self.add(name, io.BytesIO(data), len(data))

    def add_blob(self, data: bytes) -> tuple[str, int]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.add_bytes(_blob(digest), data)
        return digest, len(data)


def _blob(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def _encode(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _save_layer(store: Store, writer: _Writer, diff_id: str) -> tuple[str, int]:
    """Write one layer as an uncompressed tar blob; its (digest, size)."""
    with tempfile.TemporaryFile(dir=store.tmp_dir) as spool:
        digest = store.layer_tar(diff_id, spool)
        size = spool.tell()
        spool.seek(0)
        writer.add(_blob(digest), spool, size)
    return digest, size


@dataclass(frozen=True)
class _Saved:
    config: tuple[str, int]
    manifest: tuple[str, int]
    layers: tuple[tuple[str, int], ...]
    platform: dict[str, str]


def _save_image(store: Store, writer: _Writer, image_id: str,
                layers: dict[str, tuple[str, int]]) -> _Saved:
    path = store.images_dir / f"{image_id.removeprefix('sha256:')}.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ImageNotFound(image_id) from None
    doc = json.loads(raw)
    diff_ids = list(doc["rootfs"]["diff_ids"] or [])
    for diff_id in diff_ids:
        if diff_id not in layers:
            layers[diff_id] = _save_layer(store, writer, diff_id)
    blobs = tuple(layers[d] for d in diff_ids)
    if [digest for digest, _ in blobs] != diff_ids:  # foreign layers re-tar differently
        doc["rootfs"]["diff_ids"] = [digest for digest, _ in blobs]
        raw = _encode(doc)
    config = writer.add_blob(raw)
    manifest = writer.add_blob(_encode({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config[0], "size": config[1]},
        "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": s} for d, s in blobs],
    }))
    platform = {"architecture": str(doc.get("architecture") or _architecture()),
                "os": str(doc.get("os") or "linux")}
    return _Saved(config, manifest, blobs, platform)


def save_images(store: Store, refs: Sequence[str], fileobj: IO[bytes]) -> None:
    """Write the images ``refs`` name as one ``docker save`` archive (also an OCI layout).

    A ref without a tag (``busybox``) saves every tag of that repository, as docker does; an
    id saves the image without names.  ``fileobj`` may be a pipe: it is written front to back.
    An error leaves the tar without its end-of-archive marker, so no reader takes it as whole.
    """
    chosen = _select(store, refs)
    manifest: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    index: list[dict[str, Any]] = []
    layers: dict[str, tuple[str, int]] = {}
    with tarfile.open(  # type: ignore[call-overload]
        fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT
    ) as tar:
        writer = _Writer(tar)
        for image_id, tags in chosen.items():
            saved = _save_image(store, writer, image_id, layers)
            manifest.append({"Config": _blob(saved.config[0]), "RepoTags": tags,
                             "Layers": [_blob(d) for d, _ in saved.layers]})
            descriptor = {"mediaType": OCI_MANIFEST, "digest": saved.manifest[0],
                          "size": saved.manifest[1], "platform": saved.platform}
            for tag in tags:
                repo, _, version = tag.rpartition(":")
                if saved.layers:
                    top = saved.layers[-1][0].removeprefix("sha256:")
                    repositories.setdefault(repo, {})[version] = top
                index.append(descriptor | {"annotations": {
                    ANNOTATION_IMAGE_NAME: f"{_qualified(repo)}:{version}",
                    ANNOTATION_REF_NAME: version}})
            if not tags:
                index.append(descriptor)
        writer.add_bytes(INDEX, _encode({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                         "manifests": index}))
        writer.add_bytes(MANIFEST, _encode(manifest) + b"\n")
        writer.add_bytes(OCI_LAYOUT, _encode({"imageLayoutVersion": "1.0.0"}))
        if repositories:
            writer.add_bytes(REPOSITORIES, _encode(repositories) + b"\n")
