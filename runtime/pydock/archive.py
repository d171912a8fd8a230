"""Layer archives: OCI tar streams to overlay-format layer directories and back."""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import io
import lzma
import os
import shutil
import stat
import subprocess
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Self

from .errors import ContainerError, LayerError, StoreError

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_OVERLAY_XATTRS = "trusted.overlay."
_XATTR_PAX = "SCHILY.xattr."
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
_IGNORED_XATTR_ERRNOS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP)
_STREAM_ERRORS = (EOFError, zlib.error, lzma.LZMAError, OSError, ValueError)


_EOFHeaderError: type[Exception] = tarfile.EOFHeaderError  # type: ignore[attr-defined]
_EmptyHeaderError: type[Exception] = tarfile.EmptyHeaderError  # type: ignore[attr-defined]


class _InputError(Exception):
    """Reading or decompressing the input stream failed (kept apart from filesystem errors)."""


# -- input: decompression and hashing ------------------------------------------------------


class _Prefixed(io.RawIOBase):
    """A raw stream that replays already-read bytes before the rest of ``raw``."""

    def __init__(self, prefix: bytes, raw: IO[bytes]) -> None:
        self._prefix = prefix
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._raw.read(len(view))
        view[: len(data)] = data
        return len(data)


class _HashingReader:
    """Reads from ``stream`` and hashes every byte handed out (the diff_id)."""

    def __init__(self, stream: io.BufferedIOBase) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._stream.read(size)
        except _STREAM_ERRORS as exc:
            raise _InputError(str(exc) or type(exc).__name__) from exc
        self._hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class _HashingWriter:
    """Hashes every byte written and passes it on to ``sink`` (if any)."""

    def __init__(self, sink: IO[bytes] | None) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        if self._sink is not None:
            self._sink.write(data)
        return len(data)

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class _StrictTarInfo(tarfile.TarInfo):
    """Treats a bad header as corruption (tarfile silently stops there) and EOF as truncation."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(tarfile_)
        except _EOFHeaderError:
            raise
        except _EmptyHeaderError:
            if tarfile_.offset == 0:
                raise _InputError("empty file") from None
            raise _InputError("archive is truncated (no end-of-archive marker)") from None
        except tarfile.HeaderError as exc:
            raise _InputError(f"{exc} at offset {tarfile_.offset}") from None


def _read_prefix(fileobj: IO[bytes], size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = fileobj.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _decompressed(fileobj: IO[bytes]) -> io.BufferedIOBase:
    """The uncompressed tar stream of ``fileobj`` (compression detected by magic bytes)."""
    magic = _read_prefix(fileobj, 6)
    raw = io.BufferedReader(_Prefixed(magic, fileobj), _CHUNK)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw, "rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw, "rb")
    if magic.startswith(b"\x28\xb5\x2f\xfd"):
        raise LayerError("zstd-compressed layer archives are not supported (decompress first)")
    return raw


# -- extraction ------------------------------------------------------------------------------


def _entry_parts(name: str, *, what: str) -> tuple[str, ...]:
    """Split an archive path into components, refusing absolute paths and ``..``."""
    if name.startswith("/"):
        raise LayerError(f"{what} has an absolute path: refusing to extract outside the layer")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise LayerError(f"{what} contains '..': refusing to extract outside the layer")
    return parts


def _mtime_ns(mtime: float) -> int:
    return mtime * 1_000_000_000 if isinstance(mtime, int) else round(mtime * 1e9)


def _xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    """The member's PAX xattrs, without overlayfs' own (those come only from whiteouts)."""
    out: dict[str, bytes] = {}
    for key, value in member.pax_headers.items():
        if key.startswith(_XATTR_PAX):
            name = key[len(_XATTR_PAX) :]
            if not name.startswith(_OVERLAY_XATTRS):
                out[name] = value.encode("utf-8", "surrogateescape")
    return out


class _Extractor:
    """Creates archive members below a root directory fd, never following a symlink."""

    def __init__(self, rootfd: int) -> None:
        self.rootfd = rootfd
        self._cached: tuple[tuple[str, ...], int] | None = None
        self._dir_times: dict[tuple[str, ...], int] = {}
        self._root = os.geteuid() == 0

    def close(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    # walking

    def _walk(self, parts: tuple[str, ...], *, what: str, create: bool) -> int:
        """Open the directory ``parts`` below the root; a new fd the caller closes."""
        fd = os.dup(self.rootfd)
        try:
            for i, comp in enumerate(parts):
                child = self._step(fd, comp, parts[: i + 1], what=what, create=create)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _step(fd: int, comp: str, path: tuple[str, ...], *, what: str, create: bool) -> int:
        """Open (or create) the subdirectory ``comp`` of ``fd`` without following a symlink."""
        try:
            return os.open(comp, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise LayerError(f"{what}: {'/'.join(path)} is not in this layer") from None
            os.mkdir(comp, 0o755, dir_fd=fd)
            new = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            os.fchmod(new, 0o755)
            return new
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            if stat.S_ISLNK(os.stat(comp, dir_fd=fd, follow_symlinks=False).st_mode):
                raise LayerError(
                    f"{what} goes through the symlink {'/'.join(path)}: "
                    "refusing to write outside the layer"
                ) from None
            raise LayerError(f"{what}: {'/'.join(path)} is not a directory") from None

    def parent(self, parts: tuple[str, ...], *, what: str) -> int:
        """The (cached, not to be closed) fd of directory ``parts``, created if missing."""
        if self._cached is not None and self._cached[0] == parts:
            return self._cached[1]
        fd = self._walk(parts, what=what, create=True)
        self.close()
        self._cached = (parts, fd)
        return fd

    # entries

    def add(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        what = f"layer entry {member.name!r}"
        parts = _entry_parts(member.name, what=what)
        if not parts:
            return self._root_entry(member, what=what)
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            return self._whiteout(member, parts, what=what)
        pfd = self.parent(parts[:-1], what=what)
        if member.isdir():
            self._directory(member, pfd, base, parts)
        elif member.isreg():
            self._remove(pfd, base)
            self._regular(member, tar, pfd, base)
        elif member.issym():
            self._remove(pfd, base)
            os.symlink(member.linkname, base, dir_fd=pfd)
            self._meta_at(member, pfd, base, symlink=True)
        elif member.islnk():
            self._hardlink(member, pfd, base, parts)
        elif member.ischr() or member.isblk():
            self._remove(pfd, base)
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            dev = os.makedev(member.devmajor, member.devminor)
            os.mknod(base, kind | 0o600, dev, dir_fd=pfd)
            self._meta_at(member, pfd, base)
        elif member.isfifo():
            self._remove(pfd, base)
            os.mkfifo(base, 0o600, dir_fd=pfd)
            self._meta_at(member, pfd, base)
        else:
            raise LayerError(f"{what} has an unsupported tar type {member.type!r}")
        return None

    def _root_entry(self, member: tarfile.TarInfo, *, what: str) -> None:
        if not member.isdir():
            raise LayerError(f"{what} names the layer root but is not a directory")
        self._meta_fd(member, self.rootfd)
        self._dir_times[()] = _mtime_ns(member.mtime)

    def _directory(
        self, member: tarfile.TarInfo, pfd: int, base: str, parts: tuple[str, ...]
    ) -> None:
        st = self._lstat(pfd, base)
        if st is None or not stat.S_ISDIR(st.st_mode):
            self._remove(pfd, base)
            os.mkdir(base, 0o700, dir_fd=pfd)
        fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
        try:
            self._meta_fd(member, fd)
        finally:
            os.close(fd)
        self._dir_times[parts] = _mtime_ns(member.mtime)

    def _regular(self, member: tarfile.TarInfo, tar: tarfile.TarFile, pfd: int, base: str) -> None:
        fd = os.open(base, _FILE_FLAGS, 0o600, dir_fd=pfd)
        with open(fd, "wb", closefd=True) as out:
            src = tar.extractfile(member)
            if src is not None:
                shutil.copyfileobj(src, out, _CHUNK)
            out.flush()
            self._meta_fd(member, fd)
            ns = _mtime_ns(member.mtime)
            os.utime(fd, ns=(ns, ns))

    def _hardlink(
        self, member: tarfile.TarInfo, pfd: int, base: str, parts: tuple[str, ...]
    ) -> None:
        what = f"hardlink {member.name!r} -> {member.linkname!r}"
        target = _entry_parts(member.linkname, what=what)
        if not target:
            raise LayerError(f"{what} points at the layer root")
        if target == parts:
            return
        tfd = self._walk(target[:-1], what=what, create=False)
        try:
            if self._lstat(tfd, target[-1]) is None:
                raise LayerError(f"{what}: the target is not in this layer")
            self._remove(pfd, base)
            os.link(target[-1], base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def _whiteout(self, member: tarfile.TarInfo, parts: tuple[str, ...], *, what: str) -> None:
        base = parts[-1]
        if base == OPAQUE_MARKER:
            fd = self.parent(parts[:-1], what=what)
            os.setxattr(fd, OPAQUE_XATTR, b"y")
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # aufs metadata (.wh..wh.plnk and friends): nothing to do in overlay
        name = base[len(WHITEOUT_PREFIX) :]
        if name in ("", ".", ".."):
            raise LayerError(f"{what} is a whiteout of an invalid name")
        pfd = self.parent(parts[:-1], what=what)
        self._remove(pfd, name)
        os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd)
        self._chown(member, lambda: os.chown(
            name, member.uid, member.gid, dir_fd=pfd, follow_symlinks=False))
        ns = _mtime_ns(member.mtime)  # the re-tarred layer must give the same diff_id
        os.utime(name, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)

    # metadata

    def _chown(self, member: tarfile.TarInfo, call: Callable[[], None]) -> None:
        try:
            call()
        except PermissionError:
            if self._root:
                raise

    def _meta_fd(self, member: tarfile.TarInfo, fd: int) -> None:
        self._chown(member, lambda: os.fchown(fd, member.uid, member.gid))
        os.fchmod(fd, member.mode & 0o7777)
        for name, value in _xattrs(member).items():
            _set_xattr(fd, name, value)

    def _meta_at(self, member: tarfile.TarInfo, pfd: int, base: str, *, symlink: bool = False) -> None:
        self._chown(member, lambda: os.chown(
            base, member.uid, member.gid, dir_fd=pfd, follow_symlinks=False))
        if not symlink:  # base was just created by us as a device or fifo: no symlink to follow
            os.chmod(base, member.mode & 0o7777, dir_fd=pfd)
        for name, value in _xattrs(member).items():
            _set_xattr(f"/proc/self/fd/{pfd}/{base}", name, value)
        ns = _mtime_ns(member.mtime)
        os.utime(base, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)

    # helpers

    @staticmethod
    def _lstat(pfd: int, base: str) -> os.stat_result | None:
        try:
            return os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _remove(self, pfd: int, base: str) -> None:
        st = self._lstat(pfd, base)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(base, dir_fd=pfd)
        else:
            os.unlink(base, dir_fd=pfd)

    def finish(self) -> None:
        """Set directory mtimes last (creating their children changed them), deepest first."""
        self.close()
        for parts, ns in sorted(self._dir_times.items(), key=lambda kv: -len(kv[0])):
            if not parts:
                os.utime(self.rootfd, ns=(ns, ns))
                continue
            try:
                pfd = self._walk(parts[:-1], what="", create=False)
            except (LayerError, OSError):
                continue
            try:
                st = self._lstat(pfd, parts[-1])
                if st is not None and stat.S_ISDIR(st.st_mode):
                    os.utime(parts[-1], ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)
            finally:
                os.close(pfd)


def _set_xattr(target: int | str, name: str, value: bytes) -> None:
    try:
        if isinstance(target, int):
            os.setxattr(target, name, value)
        else:
            os.setxattr(target, name, value, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in _IGNORED_XATTR_ERRNOS:
            raise


def extract_layer(fileobj: IO[bytes], dest: Path) -> str:
    """Extract a (possibly compressed) layer tar into the empty directory ``dest``.

    OCI whiteouts become overlayfs ones (0/0 character devices, ``trusted.overlay.opaque``).
    Returns the diff_id: ``sha256:`` of the uncompressed tar stream.  Raises ``LayerError``
    for a corrupt archive or an entry that would land outside ``dest``.
    """
    rootfd = os.open(dest, _DIR_FLAGS)
    extractor = _Extractor(rootfd)
    member: tarfile.TarInfo | None = None
    try:
        try:
            stream = _HashingReader(_decompressed(fileobj))
        except OSError as exc:
            raise _InputError(str(exc)) from exc
        with tarfile.open(  # type: ignore[call-overload]
            fileobj=stream, mode="r|", tarinfo=_StrictTarInfo
        ) as tar:
            while (member := tar.next()) is not None:
                tar.members.clear()  # streaming: do not keep every header in memory
                try:
                    extractor.add(member, tar)
                except OSError as exc:
                    raise StoreError(f"cannot extract layer entry {member.name!r}: {exc}") from exc
        extractor.finish()
        stream.drain()
    except (_InputError, tarfile.TarError) as exc:
        where = f" (last entry read: {member.name!r})" if member is not None else ""
        raise LayerError(f"corrupt layer archive: {exc or type(exc).__name__}{where}") from exc
    finally:
        extractor.close()
        os.close(rootfd)
    return stream.digest()


# -- writing ---------------------------------------------------------------------------------


def _walk_tree(root: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """(path, relative name, lstat) of everything below ``root``, pre-order, sorted by name."""
    stack: list[tuple[str, str, list[str]]] = [(root, "", sorted(os.listdir(root), reverse=True))]
    while stack:
        dirpath, rel, names = stack[-1]
        if not names:
            stack.pop()
            continue
        name = names.pop()
        full = os.path.join(dirpath, name)
        relname = f"{rel}/{name}" if rel else name
        st = os.lstat(full)
        yield full, relname, st
        if stat.S_ISDIR(st.st_mode):
            stack.append((full, relname, sorted(os.listdir(full), reverse=True)))


def _read_xattrs(path: str) -> dict[str, bytes]:
    try:
        names = sorted(os.listxattr(path, follow_symlinks=False))
    except OSError as exc:
        if exc.errno in _IGNORED_XATTR_ERRNOS:
            return {}
        raise
    return {name: os.getxattr(path, name, follow_symlinks=False) for name in names}


class _TarWriter:
    """Adds one directory tree to a tar, in sorted order, hardlinks detected by inode."""

    def __init__(
        self, tar: tarfile.TarFile, *, whiteouts: bool, exclude: Callable[[str], bool] | None
    ) -> None:
        self.tar = tar
        self.whiteouts = whiteouts
        self.exclude = exclude
        self._inodes: dict[tuple[int, int], str] = {}

    def add_tree(self, root: str) -> None:
        skip: str | None = None
        for full, rel, st in _walk_tree(root):
            if skip is not None and rel.startswith(skip):
                continue
            skip = None
            if self.exclude is not None and self.exclude(rel):
                skip = rel + "/"
                continue
            self._add(full, rel, st)

    def _info(self, rel: str, st: os.stat_result, xattrs: dict[str, bytes]) -> tarfile.TarInfo:
        info = tarfile.TarInfo(rel)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = int(st.st_mtime)
        if self.whiteouts:
            xattrs = {k: v for k, v in xattrs.items() if not k.startswith(_OVERLAY_XATTRS)}
        info.pax_headers = {
            _XATTR_PAX + k: v.decode("utf-8", "surrogateescape") for k, v in xattrs.items()
        }
        return info

    def _add(self, full: str, rel: str, st: os.stat_result) -> None:
        mode = st.st_mode
        if stat.S_ISSOCK(mode):
            return  # a tar cannot hold a socket
        if self.whiteouts and stat.S_ISCHR(mode) and st.st_rdev == 0:
            return self._add_whiteout(rel, st)
        xattrs = _read_xattrs(full)
        info = self._info(rel, st, xattrs)
        if not stat.S_ISDIR(mode) and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            if key in self._inodes:
                info.type, info.linkname = tarfile.LNKTYPE, self._inodes[key]
                self.tar.addfile(info)
                return None
            self._inodes[key] = rel
        if stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
            self.tar.addfile(info)
            if self.whiteouts and xattrs.get(OPAQUE_XATTR) == b"y":
                self._add_marker(f"{rel}/{OPAQUE_MARKER}", st, stat.S_IMODE(mode) & 0o777)
        elif stat.S_ISREG(mode):
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with open(fd, "rb") as src:
                info.size = os.fstat(fd).st_size
                self.tar.addfile(info, src)
        elif stat.S_ISLNK(mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(full)
            self.tar.addfile(info)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self.tar.addfile(info)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
            self.tar.addfile(info)
        return None

    def _add_whiteout(self, rel: str, st: os.stat_result) -> None:
        head, _, base = rel.rpartition("/")
        name = f"{head}/{WHITEOUT_PREFIX}{base}" if head else WHITEOUT_PREFIX + base
        self._add_marker(name, st, 0o600)

    def _add_marker(self, name: str, st: os.stat_result, mode: int) -> None:
        info = tarfile.TarInfo(name)
        info.mode = mode
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = int(st.st_mtime)
        self.tar.addfile(info)


def write_layer_tar(
    src: Path,
    fileobj: IO[bytes] | None,
    *,
    whiteouts: bool = True,
    exclude: Callable[[str], bool] | None = None,
) -> str:
    """Write ``src`` as a deterministic uncompressed PAX tar to ``fileobj``; return its diff_id.

    Entries are sorted, owners numeric, mtimes whole seconds.  With ``whiteouts``, overlayfs
    whiteouts and opaque directories become OCI ``.wh.`` entries and ``trusted.overlay.*``
    xattrs are left out.  ``exclude`` gets paths relative to ``src`` (``etc/hosts``); an
    excluded directory is left out whole.  ``fileobj=None`` only computes the diff_id.
    """
    sink = _HashingWriter(fileobj)
    with tarfile.open(  # type: ignore[call-overload]
        fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT
    ) as tar:
        _TarWriter(tar, whiteouts=whiteouts, exclude=exclude).add_tree(str(src))
    return sink.digest()


# -- trees -----------------------------------------------------------------------------------


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the tree ``src`` to the new path ``dst`` exactly (owners, modes, times, xattrs...)."""
    result = subprocess.run(
        ["cp", "-a", "--preserve=all", "-T", "--", str(src), str(dst)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StoreError(f"cannot copy {src} to {dst}: {result.stderr.strip()}")


def tree_size(root: Path) -> int:
    """Bytes held by the files below ``root`` (hardlinked files counted once), like Docker."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for _full, _rel, st in _walk_tree(str(root)):
        if stat.S_ISDIR(st.st_mode):
            continue
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
        total += st.st_size
    return total


def file_tar(path: str, data: bytes, mode: int = 0o644, mtime: int = 0) -> tuple[str, bytes]:
    """(the directory of ``path``, a tar holding just its file with ``data``): what both
    backends' ``put_file`` copy in.  ``path`` must name a file."""
    parent, _, name = path.rstrip("/").rpartition("/")
    if not name:
        raise ContainerError(f"put_file: {path!r} is not a file path")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), mode, mtime
        tar.addfile(info, io.BytesIO(data))
    return parent or "/", buf.getvalue()
