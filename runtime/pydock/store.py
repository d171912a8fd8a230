"""The local image store: layers, image configs and tags on disk, with atomic writes and a lock.

Layout under the root (every write goes to ``tmp/`` first and is renamed into place)::

    layers/<16 hex>        a layer directory in overlayfs format (short name: lowerdir limit)
    layers/<16 hex>.json   {"diff_id": ..., "size": ...}
    layers/empty           an empty directory, the lowerdir of a layerless image
    layers/<16 hex> -> ..  a host layer (pydock:host, sources/host.py): a symlink the store
                           never follows, copies or deletes through; meta {"host": ...}
    images/<64 hex>.json   the OCI image config, byte for byte (image id = sha256 of it)
    tags.json              {"name:tag": "sha256:<image id>"}
    tmp/                   staging, entries named <kind>-<pid>-... so gc can spot stale ones
    lock                   a file lock over the whole store, held only while publishing
    containers/            the runtime's (this module only reads containers/*/config.json)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .archive import copy_tree, extract_layer, tree_size, write_layer_tar
from .errors import HostViewError, ImageNotFound, LayerError, StoreError, UsageError
from .flock import FileMutex
from .locations import default_store
from .models import Image, ImageConfig, ImageRef

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX_PREFIX = re.compile(r"[0-9a-f]{4,64}")
_DIFF_ID = re.compile(r"sha256:[0-9a-f]{64}")
_LAYER_NAME = re.compile(r"[0-9a-f]{16}")
_TMP_NAME = re.compile(r"[a-z]+-(\d+)-")
_SHORT = 16
_ARCH = {
    "x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
    "armv7l": "arm", "armv6l": "arm", "i386": "386", "i686": "386",
    "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
}


@dataclass(frozen=True)
class GcReport:
    """What ``Store.gc`` removed."""

    layers: tuple[str, ...]
    tmp_entries: tuple[str, ...]
    bytes_freed: int


def short_name(diff_id: str) -> str:
    """The layer directory name of ``diff_id``: its first 16 hex digits."""
    if not _DIFF_ID.fullmatch(diff_id):
        raise StoreError(f"invalid layer diff_id {diff_id!r} (expected sha256:<64 hex>)")
    return diff_id[len("sha256:") :][:_SHORT]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z"
    )


def _architecture() -> str:
    machine = platform.machine()
    return _ARCH.get(machine, machine.lower())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _encode(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class Store:
    """A content-addressed image store in one directory; safe to share between processes."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(os.path.abspath(root if root else self.default_root()))
        self._lock = FileMutex(str(self.root / "lock"))
        self._init_dirs()

    @staticmethod
    def default_root() -> Path:
        """``$PYDOCK_STORE``, else ``$XDG_CACHE_HOME/pydock``, else ``~/.cache/pydock``."""
        return default_store()

    def _init_dirs(self) -> None:
        try:
            if not self.root.is_dir():
                # owner-only: layers hold images' setuid binaries, keep other users out
                self.root.mkdir(parents=True, exist_ok=True)
                self.root.chmod(0o700)
            for path in (self.layers_dir, self.layers_dir / "empty"):
                if not path.is_dir():  # traversable, whatever the umask
                    path.mkdir(exist_ok=True)
                    path.chmod(0o755)
            for name in ("images", "tmp", "containers"):
                path = self.root / name
                if not path.is_symlink():  # containers/ may link to tmpfs
                    try:
                        path.mkdir(exist_ok=True)
                    except FileExistsError:  # linked (to a run dir not made yet) meanwhile
                        if not path.is_symlink():
                            raise
        except OSError as exc:
            raise StoreError(f"cannot create the image store at {self.root}: {exc}") from exc

    # -- paths and locking -------------------------------------------------------------------

    @property
    def layers_dir(self) -> Path:
        return self.root / "layers"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def build_cache_dir(self) -> Path:
        """Where the builder keeps its step cache (see ``pydock.builder.cache``)."""
        return self.root / "build-cache"

    @property
    def containers_dir(self) -> Path:
        return self.root / "containers"

    def lock(self) -> FileMutex:
        """The store-wide lock, as a (reentrant) context manager."""
        return self._lock

    def layer_path(self, diff_id: str) -> Path:
        """The directory of the layer ``diff_id`` (which may not exist)."""
        return self.layers_dir / short_name(diff_id)

    @contextlib.contextmanager
    def _staging(self, kind: str) -> Iterator[Path]:
        """A private directory in ``tmp/``, removed afterwards whatever happens."""
        path = Path(tempfile.mkdtemp(prefix=f"{kind}-{os.getpid()}-", dir=self.tmp_dir))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def _write_atomic(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f"json-{os.getpid()}-", dir=self.tmp_dir)
        try:
            with open(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    # -- reading -----------------------------------------------------------------------------

    def _tags(self) -> dict[str, str]:
        try:
            data = (self.root / "tags.json").read_bytes()
        except FileNotFoundError:
            return {}
        try:
            tags = json.loads(data)
        except ValueError as exc:
            raise StoreError(f"{self.root / 'tags.json'} is corrupt: {exc}") from exc
        return {str(k): str(v) for k, v in tags.items()}

    def _write_tags(self, tags: dict[str, str]) -> None:
        data = json.dumps(tags, indent=1, sort_keys=True).encode()
        self._write_atomic(self.root / "tags.json", data)

    def _image_hexes(self) -> list[str]:
        return [p.stem for p in self.images_dir.glob("*.json") if _HEX64.fullmatch(p.stem)]

    def config_document(self, image: Image | str) -> dict[str, Any]:
        """The OCI image config JSON of ``image`` (an Image or any reference) as a dict."""
        return self._config_doc(image.id if isinstance(image, Image) else self._resolve(image))

    def config_bytes(self, image: Image) -> bytes:
        """The image's config exactly as stored (its sha256 is the image id)."""
        try:
            return (self.images_dir / f"{image.id.removeprefix('sha256:')}.json").read_bytes()
        except FileNotFoundError:
            raise ImageNotFound(image.id) from None

    def _config_doc(self, image_id: str) -> dict[str, Any]:
        path = self.images_dir / f"{image_id.removeprefix('sha256:')}.json"
        try:
            doc: dict[str, Any] = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise ImageNotFound(image_id) from None
        except ValueError as exc:
            raise StoreError(f"image config {path} is corrupt: {exc}") from exc
        return doc

    def _layer_meta(self, diff_id: str) -> dict[str, Any] | None:
        try:
            data = self.layer_path(diff_id).with_suffix(".json").read_bytes()
            meta: dict[str, Any] = json.loads(data)
        except (FileNotFoundError, ValueError):
            return None
        return meta

    def _load(self, image_id: str, tags: dict[str, str]) -> Image:
        doc = self._config_doc(image_id)
        diff_ids = tuple((doc.get("rootfs") or {}).get("diff_ids") or ())
        size = sum(int((self._layer_meta(d) or {}).get("size", 0)) for d in diff_ids)
        return Image(
            id=image_id,
            config=ImageConfig.from_oci(doc.get("config")),
            diff_ids=diff_ids,
            created=str(doc.get("created", "")),
            tags=tuple(sorted(name for name, target in tags.items() if target == image_id)),
            architecture=str(doc.get("architecture", "")),
            os=str(doc.get("os", "")),
            size=size,
        )

    def _resolve(self, ref: str, tags: dict[str, str] | None = None) -> str:
        """The full image id ``ref`` names (a tag, an id or a unique id prefix)."""
        tags = self._tags() if tags is None else tags
        hexpart = ref.removeprefix("sha256:")
        if _HEX64.fullmatch(hexpart):
            if (self.images_dir / f"{hexpart}.json").exists():
                return f"sha256:{hexpart}"
            raise ImageNotFound(ref)
        if not ref.startswith("sha256:"):
            with contextlib.suppress(UsageError):
                name = str(ImageRef.parse(ref))
                if name in tags:
                    return tags[name]
        if _HEX_PREFIX.fullmatch(hexpart):
            matches = [h for h in self._image_hexes() if h.startswith(hexpart)]
            if len(matches) > 1:
                raise StoreError(
                    f"image id prefix {ref!r} is ambiguous: it matches {len(matches)} images"
                )
            if matches:
                return f"sha256:{matches[0]}"
        raise ImageNotFound(ref)

    def has_image(self, image_id: str) -> bool:
        """Whether the image with the full id ``image_id`` is in the store."""
        hexid = image_id.removeprefix("sha256:")
        return bool(_HEX64.fullmatch(hexid)) and (self.images_dir / f"{hexid}.json").exists()

    def image(self, ref: str) -> Image:
        """The image ``ref`` names: ``name[:tag]``, ``sha256:<hex>``, hex id or unique prefix.

        ``pydock:host``, the host base image, is made on first use (``sources/host.py``).
        """
        tags = self._tags()
        try:
            return self._load(self._resolve(ref, tags), tags)
        except ImageNotFound:
            from .sources.host import host_image, is_host_ref  # it builds on this module
            if not is_host_ref(ref):
                raise
            return host_image(self)

    def lookup(self, ref: str) -> Image | None:
        """The image ``ref`` names, or None; unlike ``image`` it never makes one."""
        tags = self._tags()
        with contextlib.suppress(ImageNotFound):
            return self._load(self._resolve(ref, tags), tags)
        return None

    def images(self) -> list[Image]:
        """All images, newest first."""
        tags = self._tags()
        found = []
        for hexid in self._image_hexes():
            with contextlib.suppress(ImageNotFound):  # removed meanwhile
                found.append(self._load(f"sha256:{hexid}", tags))
        return sorted(found, key=lambda image: image.created, reverse=True)

    def layer_names(self, image: Image) -> list[str]:
        """Layer directory names relative to ``layers_dir``, top first (overlay lowerdir order).

        A layer the image holds twice (``COPY a /x``, ``RUN rm /x``, ``COPY a /x``) is listed
        once, at its topmost place: overlayfs refuses a lowerdir given twice (ELOOP), and the
        lower copy changes nothing the upper one does not change again."""
        if not image.diff_ids:
            return ["empty"]
        names = list(dict.fromkeys(short_name(d) for d in reversed(image.diff_ids)))
        for name, diff_id in zip(names, dict.fromkeys(reversed(image.diff_ids)), strict=False):
            if not (self.layers_dir / name).is_dir():
                raise StoreError(
                    f"layer {diff_id} of image {image.short_id} is missing from the store "
                    f"{self.root}: remove the image and import it again"
                )
        return names

    def images_in_use(self) -> set[str]:
        """Ids of images that containers in ``containers/*/config.json`` were created from."""
        used: set[str] = set()
        for path in self.containers_dir.glob("*/config.json"):
            if path.parent.name.endswith(".rm"):
                continue  # a removed container's directory, left for the monitor to delete
            try:
                image_id = json.loads(path.read_bytes()).get("image_id")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(image_id, str) and image_id:
                used.add(image_id if image_id.startswith("sha256:") else f"sha256:{image_id}")
        return used

    # -- writing layers ----------------------------------------------------------------------

    def _publish_layer(self, staged: Path, diff_id: str, size: int) -> None:
        """Move a finished layer dir into ``layers/`` (under the lock); dedupe by diff_id."""
        dest = self.layer_path(diff_id)
        meta_path = dest.with_suffix(".json")
        if dest.is_dir():
            meta = self._layer_meta(diff_id)
            if meta is not None and meta.get("diff_id") != diff_id:
                raise StoreError(f"layer name clash: {diff_id} and {meta.get('diff_id')}")
            if meta is None:
                meta = {"diff_id": diff_id,
                        "size": 0 if dest.is_symlink() else tree_size(dest)}
                self._write_atomic(meta_path, _encode(meta))
            return
        os.rename(staged, dest)
        self._write_atomic(meta_path, _encode({"diff_id": diff_id, "size": size}))

    def _pin(self, diff_id: str) -> Path:
        return self.tmp_dir / f"pin-{os.getpid()}-{short_name(diff_id)}"

    def add_layer_dir(self, src_dir: Path, *, exclude: Callable[[str], bool] | None = None) -> str:
        """Snapshot ``src_dir`` (overlay format, e.g. a container's upper dir) as a layer.

        Returns its diff_id.  The layer is pinned for this process until ``create_image``
        uses it, so a concurrent ``gc`` or ``rmi`` cannot remove it in between.
        """
        if Path(src_dir).is_symlink():
            raise HostViewError(f"{src_dir} is a symlink (a host layer?): not copied")
        with self._staging("commit") as stage:
            staged = stage / "layer"
            copy_tree(Path(src_dir), staged)
            _strip_copy(staged, exclude)
            diff_id = write_layer_tar(staged, None)  # of the copy: what the layer will hold
            size = tree_size(staged)
            with self.lock():
                self._publish_layer(staged, diff_id, size)
                self._pin(diff_id).touch()
        return diff_id

    def has_layer(self, diff_id: str) -> bool:
        """Whether the layer ``diff_id`` is in the store."""
        return self.layer_path(diff_id).is_dir()

    def add_host_layer(self, diff_id: str, *, link: str | None = None,
                       fill: Callable[[Path], None] | None = None) -> str:
        """Publish a layer of a host base image (``sources/host.py``); pinned like
        ``add_layer_tar`` until ``create_image`` uses it; a no-op when it exists.

        With ``link``: a host reference, ``layers/<short>`` made a symlink to ``link``, which
        the store never follows to write, copy or delete.  With ``fill``: a directory that
        ``fill(dir)`` writes (the mask: whiteouts, opaque and redirect xattrs).  The diff_id
        is the caller's (no tar has it): ``layer_tar`` refuses host layers.
        """
        kind = "reference" if link is not None else "mask"
        with self._staging("host") as stage:
            staged = stage / "layer"
            if link is not None:
                os.symlink(link, staged)
            else:
                staged.mkdir()
                staged.chmod(0o755)
                if fill is not None:
                    fill(staged)
            with self.lock():
                dest = self.layer_path(diff_id)
                if dest.is_symlink() and not dest.is_dir():
                    dest.unlink()  # dangling: its target went
                if not dest.is_dir():
                    os.rename(staged, dest)
                    meta = {"diff_id": diff_id, "host": kind,
                            "size": 0 if link is not None else tree_size(dest)}
                    self._write_atomic(dest.with_suffix(".json"), _encode(meta))
                elif not self.is_host_layer(diff_id):
                    raise StoreError(f"layer name clash: {diff_id} and the layer at {dest}")
                self._pin(diff_id).touch()
        return diff_id

    def is_host_layer(self, diff_id: str) -> bool:
        """Whether ``diff_id`` is a layer of a host base image (a reference or its mask)."""
        return self.layer_path(diff_id).is_symlink() or \
            "host" in (self._layer_meta(diff_id) or {})

    def add_layer_tar(self, fileobj: IO[bytes], *, expected_diff_id: str | None = None) -> str:
        """Extract a layer tar (plain, gzip, bzip2 or xz; OCI whiteouts) into the store.

        Returns its diff_id (the sha256 of the uncompressed tar), pinned for this process
        until ``create_image``/``add_image_config`` uses it.  With ``expected_diff_id`` a
        layer already in the store is not read at all, and one whose content does not match
        is refused (``LayerError``) and leaves nothing behind.
        """
        if expected_diff_id is not None and self.has_layer(expected_diff_id):
            with self.lock():
                if self.has_layer(expected_diff_id):
                    self._pin(expected_diff_id).touch()
                    return expected_diff_id
        with self._staging("layer") as stage:
            staged = stage / "layer"
            staged.mkdir()
            staged.chmod(0o755)
            diff_id = extract_layer(fileobj, staged)
            if expected_diff_id is not None and diff_id != expected_diff_id:
                raise LayerError(
                    f"layer content does not match its digest: expected {expected_diff_id}, "
                    f"got {diff_id}"
                )
            size = tree_size(staged)
            with self.lock():
                self._publish_layer(staged, diff_id, size)
                self._pin(diff_id).touch()
        return diff_id

    def add_image_config(self, data: bytes, *, ref: str | None = None) -> Image:
        """Store an OCI image config exactly as given (so the image id, the sha256 of these
        bytes, is the one Docker and registries show); its layers must be in the store."""
        try:
            doc = json.loads(data)
            diff_ids = [str(d) for d in doc["rootfs"]["diff_ids"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"not an OCI image config: {exc}") from None
        for diff_id in diff_ids:
            short_name(diff_id)
        hexid = hashlib.sha256(data).hexdigest()
        name = str(ImageRef.parse(ref)) if ref else None
        with self.lock():
            for diff_id in diff_ids:
                if not self.has_layer(diff_id):
                    raise StoreError(f"layer {diff_id} is not in the store {self.root}")
            path = self.images_dir / f"{hexid}.json"
            if not path.exists():
                self._write_atomic(path, data)
            for diff_id in diff_ids:
                with contextlib.suppress(FileNotFoundError):
                    self._pin(diff_id).unlink()
            if name:
                self._set_tag(name, f"sha256:{hexid}")
        return self.image(f"sha256:{hexid}")

    def import_tar(
        self, fileobj: IO[bytes], *, config: ImageConfig, ref: str | None = None, comment: str = ""
    ) -> Image:
        """Import a rootfs tarball (plain, gzip, bzip2 or xz) as a one-layer image."""
        name = str(ImageRef.parse(ref)) if ref else None
        with self._staging("import") as stage:
            staged = stage / "layer"
            staged.mkdir()
            staged.chmod(0o755)
            diff_id = extract_layer(fileobj, staged)
            size = tree_size(staged)
            with self.lock():
                self._publish_layer(staged, diff_id, size)
                image = self.create_image(config, [diff_id], history_comment=comment)
                if name:
                    self._set_tag(name, image.id)
        return self.image(image.id)

    def layer_tar(self, diff_id: str, fileobj: IO[bytes]) -> str:
        """Write layer ``diff_id`` as an OCI tar; returns the digest of what was written.

        That digest equals ``diff_id`` for layers this store made itself; a layer imported
        from a foreign tar re-tars to different bytes (entry order, headers), so a writer of
        ``docker save`` archives must use the returned digest.
        """
        path = self.layer_path(diff_id)
        if self.is_host_layer(diff_id):
            raise HostViewError(f"layer {diff_id} is a view of this host's own files "
                                "(pydock:host): the host base layer cannot be exported")
        if not path.is_dir():
            raise StoreError(f"layer {diff_id} is not in the store {self.root}")
        return write_layer_tar(path, fileobj)

    # -- writing images and tags -------------------------------------------------------------

    def create_image(
        self,
        config: ImageConfig,
        diff_ids: Sequence[str],
        *,
        history_comment: str = "",
        base: Image | None = None,
    ) -> Image:
        """Write an OCI image config over layers already in the store; return the image."""
        diff_ids = tuple(diff_ids)
        for diff_id in diff_ids:
            short_name(diff_id)
        now = _now()
        doc = {
            "architecture": _architecture(),
            "os": "linux",
            "created": now,
            "config": config.to_oci(),
            "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
            "history": self._history(base, len(diff_ids), now, history_comment),
        }
        data = _encode(doc)
        hexid = hashlib.sha256(data).hexdigest()
        with self.lock():
            for diff_id in diff_ids:
                if not self.layer_path(diff_id).is_dir():
                    raise StoreError(f"layer {diff_id} is not in the store {self.root}")
            path = self.images_dir / f"{hexid}.json"
            if not path.exists():
                self._write_atomic(path, data)
            for diff_id in diff_ids:
                with contextlib.suppress(FileNotFoundError):
                    self._pin(diff_id).unlink()
        return self.image(f"sha256:{hexid}")

    def _history(
        self, base: Image | None, n_layers: int, now: str, comment: str
    ) -> list[dict[str, Any]]:
        history = list(self.config_document(base).get("history") or []) if base else []
        new_layers = n_layers - (len(base.diff_ids) if base else 0)
        entries: list[dict[str, Any]] = [{"created": now} for _ in range(max(new_layers, 1))]
        if new_layers <= 0:
            entries[0]["empty_layer"] = True
        if comment:
            entries[-1]["comment"] = comment
        return history + entries

    def _set_tag(self, name: str, image_id: str) -> None:
        with self.lock():
            tags = self._tags()
            tags[name] = image_id
            self._write_tags(tags)

    def tag(self, image_id: str, ref: str) -> None:
        """Point ``ref`` (``name[:tag]``) at the image ``image_id`` (any image reference)."""
        name = str(ImageRef.parse(ref))
        with self.lock():
            self._set_tag(name, self._resolve(image_id))

    def untag(self, ref: str) -> None:
        """Remove the tag ``ref``; the image stays (see ``remove_image``)."""
        name = str(ImageRef.parse(ref))
        with self.lock():
            tags = self._tags()
            if tags.pop(name, None) is None:
                raise ImageNotFound(ref)
            self._write_tags(tags)

    def remove_image(self, ref: str, *, force: bool = False) -> list[str]:
        """``docker rmi``: untag by name, delete an image once untagged; returns docker's lines.

        By id, an image with several tags needs ``force``.  An image a container uses is
        refused without ``force``; with it, only its tags go (the image stays for the container).
        Layers no other image uses are deleted with the image.
        """
        with self.lock():
            tags = self._tags()
            image_id = self._resolve(ref, tags)
            image_tags = sorted(n for n, target in tags.items() if target == image_id)
            by_name = self._names_tag(ref, tags)
            short = image_id.removeprefix("sha256:")[:12]
            in_use = image_id in self.images_in_use()
            if by_name is not None and len(image_tags) > 1:
                return self._untag_lines(tags, [by_name])
            if by_name is None and len(image_tags) > 1 and not force:
                raise StoreError(
                    f"conflict: unable to delete {short} (must be forced) - image is referenced "
                    f"in multiple repositories: {', '.join(image_tags)}"
                )
            if in_use and not force:
                raise StoreError(
                    f"conflict: unable to remove image {ref} (must be forced) - image {short} "
                    "is used by a container (remove the container first)"
                )
            lines = self._untag_lines(tags, image_tags)
            if in_use:
                return lines
            return lines + self._delete_image(image_id)

    @staticmethod
    def _names_tag(ref: str, tags: dict[str, str]) -> str | None:
        if ref.startswith("sha256:"):
            return None
        try:
            name = str(ImageRef.parse(ref))
        except UsageError:
            return None
        return name if name in tags else None

    def _untag_lines(self, tags: dict[str, str], names: list[str]) -> list[str]:
        if not names:
            return []
        for name in names:
            del tags[name]
        self._write_tags(tags)
        return [f"Untagged: {name}" for name in names]

    def _delete_image(self, image_id: str) -> list[str]:
        """Delete an image config and the layers only it used (under the lock)."""
        doc = self._config_doc(image_id)
        os.unlink(self.images_dir / f"{image_id.removeprefix('sha256:')}.json")
        lines = [f"Deleted: {image_id}"]
        referenced = self._referenced_layers()
        for diff_id in dict.fromkeys((doc.get("rootfs") or {}).get("diff_ids") or ()):
            if short_name(diff_id) not in referenced:
                self._discard_layer(short_name(diff_id))
                lines.append(f"Deleted: {diff_id}")
        return lines

    # -- removal and gc ----------------------------------------------------------------------

    def _referenced_layers(self) -> set[str]:
        """Short names of layers some image uses or a live process has pinned."""
        names = {"empty"}
        for hexid in self._image_hexes():
            with contextlib.suppress(ImageNotFound, StoreError):
                doc = self._config_doc(f"sha256:{hexid}")
                diff_ids = (doc.get("rootfs") or {}).get("diff_ids") or ()
                names.update(short_name(d) for d in diff_ids)
        for entry in self.build_cache_dir.glob("*.json"):  # build cache entries keep theirs
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError, StoreError):
                doc = json.loads(entry.read_bytes())
                names.update(short_name(d) for d in doc["rootfs"]["diff_ids"])
        for pin in self.tmp_dir.glob("pin-*"):
            pid, _, name = pin.name.removeprefix("pin-").partition("-")
            if pid.isdigit() and _pid_alive(int(pid)):
                names.add(name)
        return names

    def _discard_layer(self, name: str) -> int:
        """Unpublish layer ``name`` (under the lock) and delete it; returns the bytes freed."""
        path = self.layers_dir / name
        meta_path = path.with_suffix(".json")
        size = 0
        with contextlib.suppress(FileNotFoundError, ValueError):
            size = int(json.loads(meta_path.read_bytes()).get("size", 0))
        if path.is_symlink():  # a host reference: the link goes, never what it points to
            path.unlink()
        elif path.is_dir():
            trash = Path(tempfile.mkdtemp(prefix=f"trash-{os.getpid()}-", dir=self.tmp_dir))
            os.rename(path, trash / "layer")
            shutil.rmtree(trash, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            meta_path.unlink()
        return size

    def gc(self, *, build_cache: bool = False) -> GcReport:
        """Delete layers no image (or build cache entry) uses and stale ``tmp/`` entries of
        dead processes; ``build_cache`` drops the build cache first.

        Conservative like ``docker image prune`` without ``-a``: images (tagged or not) stay,
        and so do layers pinned by a live process.  Safe while other processes use the store.
        """
        removed: list[str] = []
        stale: list[str] = []
        freed = 0
        with self.lock():
            if build_cache:
                for entry in self.build_cache_dir.glob("*.json"):
                    entry.unlink(missing_ok=True)
            referenced = self._referenced_layers()
            names = {p.name.removesuffix(".json") for p in self.layers_dir.iterdir()}
            for name in sorted(names - referenced):
                if _LAYER_NAME.fullmatch(name):
                    removed.append(self._layer_meta_by_name(name) or name)
                    freed += self._discard_layer(name)
            for entry in sorted(self.tmp_dir.iterdir()):
                match = _TMP_NAME.match(entry.name)
                if match and not _pid_alive(int(match.group(1))):
                    _remove_path(entry)
                    stale.append(entry.name)
        return GcReport(tuple(removed), tuple(stale), freed)

    def _layer_meta_by_name(self, name: str) -> str | None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return str(json.loads((self.layers_dir / f"{name}.json").read_bytes())["diff_id"])
        return None


def _strip_copy(root: Path, exclude: Callable[[str], bool] | None) -> None:
    """Drop excluded paths and overlayfs-internal xattrs (all but opaque) from a layer copy."""
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        before = os.lstat(dirpath)
        removed = False
        for name in [*dirnames, *filenames]:
            full = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if exclude is not None and exclude(rel):
                _remove_path(Path(full))
                removed = True
                if name in dirnames:
                    dirnames.remove(name)
                continue
            _strip_overlay_xattrs(full)
        if removed:  # keep the mtime the layer's tar (computed without these) recorded
            os.utime(dirpath, ns=(before.st_atime_ns, before.st_mtime_ns))


def _strip_overlay_xattrs(path: str) -> None:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        if name.startswith("trusted.overlay.") and name != "trusted.overlay.opaque":
            os.removexattr(path, name, follow_symlinks=False)
