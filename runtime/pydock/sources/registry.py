"""Pull images from and push images to registries (the OCI distribution API) into a Store.

    pull(store, "busybox")                          # docker.io/library/busybox:latest
    pull(store, "127.0.0.1:5000/app:1", platform="linux/arm64")
    push(store, "app:1", "registry.example.com/team/app:1")

A pulled image keeps the registry's config bytes, so its id is the one Docker shows.  Layers
are stored once per diff_id, each download is checked against its digest before anything is
published, and several processes pulling the same image do the work once (file locks).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from filelock import FileLock

from ..errors import LayerError, RegistryError, UsageError
from ..models import Image, ImageRef
from ..store import Store
from .client import Repository, VerifiedBlob
from .manifest import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    MANIFEST_V2,
    MAX_CONFIG,
    OCI_INDEX,
    Compression,
    Descriptor,
    Index,
    Manifest,
    Platform,
    compression,
    oci_index,
    parse,
    schema2,
)
from .reference import RegistryRef

PARALLEL_DOWNLOADS = 3  # Docker's default (max-concurrent-downloads)


@dataclass(frozen=True)
class Progress:
    """One docker-style progress line: ``<id>: <status>``, or ``status`` alone."""

    id: str
    status: str

    def __str__(self) -> str:
        return f"{self.id}: {self.status}" if self.id else self.status


ProgressFn = Callable[[Progress], None]


_report_lock = threading.Lock()  # progress comes from the download threads too


def _report(progress: ProgressFn | None, ident: str, status: str) -> None:
    if progress is not None:
        with _report_lock:
            progress(Progress(ident, status))


def _lock(store: Store, kind: str, digest: str) -> FileLock:
    """A per-digest lock in ``<store>/locks/`` (other processes pulling the same wait)."""
    locks = store.root / "locks"
    locks.mkdir(exist_ok=True)
    return FileLock(str(locks / f"{kind}-{digest.removeprefix('sha256:')[:16]}.lock"))


# -- pull ------------------------------------------------------------------------------------


def pull(
    store: Store,
    ref: str,
    *,
    insecure: bool = False,
    platform: str | Platform | None = None,
    progress: ProgressFn | None = None,
) -> Image:
    """Pull ``ref`` (``[registry/]name[:tag][@digest]``) into ``store`` and return the image.

    An index picks the host's platform (or ``platform``, e.g. ``linux/arm64``).  A pull by tag
    tags the image with Docker's short name (``busybox:latest``, ``127.0.0.1:5000/app:1``).
    ``insecure`` allows plain http (always allowed for registries on loopback).
    """
    parsed = RegistryRef.parse(ref)
    want = Platform.parse(platform) if isinstance(platform, str) else platform
    repo = Repository(parsed, insecure=insecure)
    what = str(parsed)
    if parsed.tag and not parsed.digest:
        _report(progress, parsed.tag, f"Pulling from {parsed.repository}")
    data, content_type, top_digest = repo.get_manifest(parsed.reference, what)
    manifest = _resolve(repo, parse(data, content_type, what), want or Platform.host(), what)
    raw_config = repo.read_blob(manifest.config, MAX_CONFIG, f"{what}: config")
    diff_ids = _diff_ids(raw_config, manifest, what)
    image_id = manifest.config.digest
    with _lock(store, "image", image_id):
        fresh = not _have_image(store, image_id, diff_ids)
        if fresh:
            _fetch_layers(store, repo, manifest, diff_ids, what, progress)
        image = store.add_image_config(raw_config, ref=parsed.local_tag)
    _report(progress, "", f"Digest: {top_digest}")
    shown = parsed.local_tag or f"{parsed.familiar_name}@{parsed.digest}"
    status = "Downloaded newer image" if fresh else "Image is up to date"
    _report(progress, "", f"Status: {status} for {shown}")
    return image


def _resolve(repo: Repository, doc: Manifest | Index, want: Platform, what: str) -> Manifest:
    if isinstance(doc, Manifest):
        return doc
    entry = doc.select(want, what)
    data, content_type, _ = repo.get_manifest(entry.digest, f"{what} ({want})")
    child = parse(data, content_type, what)
    if not isinstance(child, Manifest):
        raise RegistryError(f"{what}: the index entry for {want} is not an image manifest")
    return child


def _diff_ids(raw_config: bytes, manifest: Manifest, what: str) -> list[str]:
    try:
        doc = json.loads(raw_config)
        diff_ids = [str(d) for d in doc["rootfs"]["diff_ids"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"{what}: the image config is not an OCI image config ({exc})")\
            from None
    if len(diff_ids) != len(manifest.layers):
        raise RegistryError(f"{what}: the manifest lists {len(manifest.layers)} layers but the "
                            f"config {len(diff_ids)} diff_ids")
    return diff_ids


def _have_image(store: Store, image_id: str, diff_ids: list[str]) -> bool:
    config = store.images_dir / f"{image_id.removeprefix('sha256:')}.json"
    return config.is_file() and all(store.has_layer(d) for d in diff_ids)


def _fetch_layers(store: Store, repo: Repository, manifest: Manifest, diff_ids: list[str],
                  what: str, progress: ProgressFn | None) -> None:
    for desc in manifest.layers:
        compression(desc.media_type, what)  # refuse unknown layer types before any download
    todo = list(zip(manifest.layers, diff_ids, strict=True))
    for desc, diff_id in todo:
        status = "Already exists" if store.has_layer(diff_id) else "Pulling fs layer"
        _report(progress, desc.short, status)
    with ThreadPoolExecutor(PARALLEL_DOWNLOADS, thread_name_prefix="pydock-pull") as pool:
        futures = [pool.submit(_fetch_layer, store, repo, desc, diff_id, what, progress)
                   for desc, diff_id in todo]
        try:
            for future in futures:
                future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def _fetch_layer(store: Store, repo: Repository, desc: Descriptor, diff_id: str, what: str,
                 progress: ProgressFn | None) -> None:
    """Add one layer, downloaded only if the store lacks it, once across processes."""
    where = f"{what}: layer {desc.digest}"
    with _lock(store, "layer", diff_id):
        blob = VerifiedBlob(lambda: repo.open_blob(desc, where), desc, where)
        blob.on_eof = lambda: _report(progress, desc.short, "Download complete")
        with blob:
            try:
                store.add_layer_tar(_decompress(blob, compression(desc.media_type, where)),
                                    expected_diff_id=diff_id)
            except LayerError as exc:
                if blob.opened:
                    blob.drain()  # a digest mismatch explains the corruption better
                raise LayerError(f"{where}: {exc}") from exc
        if blob.opened:
            _report(progress, desc.short, "Pull complete")


class _Decompressed(io.RawIOBase):
    """The uncompressed stream of a verified blob; at its end the blob is read to its end too,
    so its digest is checked before the store publishes the layer."""

    def __init__(self, stream: Any, blob: VerifiedBlob) -> None:
        self._stream = stream
        self._blob = blob

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        try:
            data = self._stream.read(len(view))
        except (RegistryError, OSError, EOFError, ValueError):
            raise
        except Exception as exc:  # zstandard.ZstdError: corrupt input, like a zlib error
            raise ValueError(f"zstd: {exc}") from exc
        if not data:
            self._blob.drain()
            return 0
        view[: len(data)] = data
        return len(data)


def _decompress(blob: VerifiedBlob, kind: Compression) -> IO[bytes]:
    buffered = io.BufferedReader(blob, 1 << 20)
    stream: Any
    if kind is Compression.GZIP:
        stream = gzip.GzipFile(fileobj=buffered, mode="rb")
    elif kind is Compression.ZSTD:
        try:
            import zstandard
        except ImportError:
            raise RegistryError("zstd-compressed layers need the zstandard package "
                                "(pip install zstandard)") from None
        stream = zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
    else:
        stream = buffered
    return io.BufferedReader(_Decompressed(stream, blob), 1 << 20)


# -- push ------------------------------------------------------------------------------------


def push(
    store: Store,
    image_ref: str,
    dest_ref: str | None = None,
    *,
    insecure: bool = False,
    progress: ProgressFn | None = None,
) -> str:
    """Upload the image ``image_ref`` to ``dest_ref`` (default: its own name); returns the
    manifest digest.  The manifest is Docker schema2 with gzip layers, as ``docker push``."""
    dest = _destination(image_ref, dest_ref)
    image = store.image(image_ref)
    if dest_ref is None and str(ImageRef.parse(image_ref)) not in image.tags:
        raise UsageError(f"{image_ref} is no image name: say where to push it "
                         f"(pydock push {image_ref} REGISTRY/NAME:TAG)")
    repo = Repository(dest, insecure=insecure).for_push()
    _report(progress, "", f"The push refers to repository [{dest.name}]")
    manifest = _push_image(store, repo, image, progress)
    digest = repo.put_manifest(dest.reference, manifest, MANIFEST_V2, str(dest))
    _report(progress, "", f"{dest.reference}: digest: {digest} size: {len(manifest)}")
    return digest


def push_index(
    store: Store,
    image_refs: Sequence[str],
    dest_ref: str,
    *,
    insecure: bool = False,
    progress: ProgressFn | None = None,
) -> str:
    """Upload several images (one per platform, read from their configs) and an OCI index
    over them under ``dest_ref``; returns the index digest."""
    dest = RegistryRef.parse(dest_ref)
    repo = Repository(dest, insecure=insecure).for_push()
    entries: list[Descriptor] = []
    for ref in image_refs:
        image = store.image(ref)
        plat = Platform(image.os or "linux", image.architecture,
                        str(store.config_document(image).get("variant") or ""))
        if any(e.platform == plat for e in entries):
            raise UsageError(f"{ref}: a second image for platform {plat} in the index {dest}")
        manifest = _push_image(store, repo, image, progress)
        digest = repo.put_manifest(
            "sha256:" + hashlib.sha256(manifest).hexdigest(), manifest, MANIFEST_V2, str(dest))
        entries.append(Descriptor(MANIFEST_V2, digest, len(manifest), plat))
    data = oci_index(entries)
    digest = repo.put_manifest(dest.reference, data, OCI_INDEX, str(dest))
    _report(progress, "", f"{dest.reference}: digest: {digest} size: {len(data)}")
    return digest


def _destination(image_ref: str, dest_ref: str | None) -> RegistryRef:
    dest = RegistryRef.parse(dest_ref or image_ref)
    if dest.digest:
        raise UsageError(f"cannot push to a digest reference ({dest_ref or image_ref}): "
                         "name a tag")
    return dest


def _push_image(store: Store, repo: Repository, image: Image,
                progress: ProgressFn | None) -> bytes:
    """Upload the layers and config of ``image``; returns its schema2 manifest (not sent)."""
    what = f"push of {image.tags[0] if image.tags else image.short_id} to {repo.ref}"
    layers: list[Descriptor] = []
    actual: list[str] = []
    for diff_id in reversed(image.diff_ids):  # Docker lists the top layer first
        _report(progress, diff_id.removeprefix("sha256:")[:12], "Preparing")
    for diff_id in image.diff_ids:
        ident = diff_id.removeprefix("sha256:")[:12]
        with _gzip_layer(store, diff_id) as (fileobj, desc, tar_digest):
            if repo.has_blob(desc.digest, what):
                _report(progress, ident, "Layer already exists")
            else:
                _report(progress, ident, "Pushing")
                repo.upload_blob(fileobj, desc, what)
                _report(progress, ident, "Pushed")
        layers.append(desc)
        actual.append(tar_digest)
    raw = _config_bytes(store, image, actual)
    config = Descriptor(DOCKER_CONFIG, "sha256:" + hashlib.sha256(raw).hexdigest(), len(raw))
    if not repo.has_blob(config.digest, what):
        repo.upload_blob(io.BytesIO(raw), config, what)
    return schema2(config, layers)


def _config_bytes(store: Store, image: Image, diff_ids: list[str]) -> bytes:
    """The stored config bytes (same image id in the registry) or, when a layer re-tars to
    other bytes than it was imported from, the config with the uploaded tars' diff_ids."""
    raw = (store.images_dir / f"{image.id.removeprefix('sha256:')}.json").read_bytes()
    if list(image.diff_ids) == diff_ids:
        return raw
    doc: dict[str, Any] = json.loads(raw)
    doc["rootfs"]["diff_ids"] = diff_ids
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class _HashingFile:
    """A write-only file that hashes and counts what it passes on."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.sink.write(data)

    def flush(self) -> None:
        self.sink.flush()


@contextlib.contextmanager
def _gzip_layer(store: Store, diff_id: str) -> Iterator[tuple[IO[bytes], Descriptor, str]]:
    """The layer as a gzip blob in a temp file: (file, descriptor, digest of the tar)."""
    with tempfile.TemporaryFile(prefix=f"push-{os.getpid()}-", dir=store.tmp_dir) as f:
        hashing = _HashingFile(f)
        # mtime 0, no name: the same layer always compresses to the same blob
        with gzip.GzipFile(filename="", fileobj=hashing, mode="wb",  # type: ignore[arg-type]
                           compresslevel=6, mtime=0) as gz:
            tar_digest = store.layer_tar(diff_id, gz)  # type: ignore[arg-type]
        f.seek(0)
        desc = Descriptor(DOCKER_LAYER, "sha256:" + hashing.hash.hexdigest(), hashing.size)
        yield f, desc, tar_digest
