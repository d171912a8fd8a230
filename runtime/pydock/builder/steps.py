"""What a build step does to the filesystem: RUN in a native container, COPY/ADD written into a
container's merged view; either way the container's writable layer becomes the step's layer."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import posixpath
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, cast

from ..backends.native import rootfs
from ..backends.native.backend import NativeBackend, NativeContainer
from ..backends.native.users import UserError, resolve
from ..errors import PydockError
from ..models import Image, Mount
from ..spec import RunOptions

TAIL_LINES = 30
_SPOOL = 64 << 20


class StepFailed(Exception):
    """A step could not do its work; the message says why (the builder adds the location)."""

    def __init__(self, message: str, *, exit_code: int | None = None, output: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.output = output


@contextlib.contextmanager
def container_of(backend: NativeBackend, image: Image, opts: RunOptions
                 ) -> Iterator[NativeContainer]:
    """A container of ``image`` (which may exist only in memory), removed afterwards."""
    c = backend.create(image, opts)
    try:
        yield c
    finally:
        with contextlib.suppress(PydockError):
            c.remove(force=True)


def snapshot(backend: NativeBackend, c: NativeContainer, *,
             skip_empty_dirs: Mapping[str, tuple[int, int, int] | None] | None = None) -> str:
    """The container's writable layer as a store layer (injected /etc files left out).

    ``skip_empty_dirs``: RUN mount points and their parents, with the (mode, uid, gid) the
    image has for them (None: absent); left out while they hold nothing else and the step
    did not change them."""
    upper = c.dir.upper
    skip = skip_empty_dirs or {}

    def hollow(rel: str) -> bool:
        path = os.path.join(upper, rel)
        if rel not in skip or os.path.islink(path) or not os.path.isdir(path):
            return False
        st = os.lstat(path)
        if skip[rel] is not None and skip[rel] != (st.st_mode, st.st_uid, st.st_gid):
            return False
        return all(hollow(f"{rel}/{name}") for name in os.listdir(path))

    def exclude(rel: str) -> bool:
        return rootfs.is_init_path(rel) or hollow(rel)

    return backend.store.add_layer_dir(upper, exclude=exclude)


# -- RUN ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """A RUN step's process: argv, environment (image ENV + build args), user, workdir."""

    argv: tuple[str, ...]
    env: tuple[str, ...]
    user: str
    workdir: str
    network: str = "host"
    mounts: tuple[Any, ...] = ()    # builder.mounts.RunMount: part of the cache key


def run(backend: NativeBackend, image: Image, step: Run, *,
        output: Callable[[bytes], None], mounts: Sequence[Mount] = ()) -> str:
    """Run ``step`` in a container of ``image``; stream its output (stdout and stderr
    together) to ``output``; return the diff_id of what it changed.  ``StepFailed`` with the
    exit code and the last lines of output when it fails.  Mount points made for ``mounts``
    stay out of the layer."""
    opts = RunOptions(command=list(step.argv), entrypoint=None, env=list(step.env),
                      user=step.user or None, working_dir=step.workdir or None,
                      network=step.network, hostname="buildkitsandbox", mounts=list(mounts))
    lowers = [str(backend.store.layers_dir / n) for n in backend.store.layer_names(image)]
    made: dict[str, tuple[int, int, int] | None] = {}
    for m in mounts:  # a target and its parents: absent from the image, or as the image has it
        parts = m.target.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            st = rootfs._lower_lstat(lowers, parts[:i])
            made["/".join(parts[:i])] = None if st is None else \
                (st.st_mode, st.st_uid, st.st_gid)
    with container_of(backend, image, opts) as c:
        tail: deque[bytes] = deque(maxlen=TAIL_LINES)
        partial = b""
        r, w = os.pipe()
        try:
            with open(os.devnull, "rb") as devnull:
                try:
                    c.start(stdio=[devnull.fileno(), w, w])
                finally:
                    os.close(w)
            while chunk := os.read(r, 65536):
                output(chunk)
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()
                tail.extend(lines)
        finally:
            os.close(r)
        if partial:
            tail.append(partial)
        status = c.wait()
        if status.exit_code != 0:
            what = "was killed (out of memory)" if status.oom_killed else \
                f"returned a non-zero code: {status.exit_code}"
            raise StepFailed(f"the command {list(step.argv)} {what}", exit_code=status.exit_code,
                             output=b"\n".join(tail).decode(errors="replace"))
        return snapshot(backend, c, skip_empty_dirs=made)


# -- COPY / ADD --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One thing to write: a file of the host (``source``), or ``data``, or a directory."""

    dest: str                       # absolute path in the image
    source: str | None = None       # host path (context file, downloaded file)
    data: bytes | None = None
    mode: int | None = None         # None: the source's mode
    is_dir: bool = False


def owner_of(chown: str | None, c: NativeContainer) -> tuple[int, int]:
    """``--chown=user[:group]`` as numbers, names looked up in the image's /etc files; a
    user without a group uses the same number for the group (Docker's rule)."""
    if not chown:
        return 0, 0
    user, _, group = chown.partition(":")
    if user.isdigit() and (not group or group.isdigit()):
        return int(user), int(group or user)

    def etc(name: str) -> str:
        try:
            return rootfs.get_file(c, f"/etc/{name}").decode(errors="replace")
        except PydockError:
            return ""

    try:
        uid = int(user) if user.isdigit() else resolve(user, etc("passwd"), "").uid
        if not group:
            return uid, uid
        gid = int(group) if group.isdigit() else resolve(f"0:{group}", "", etc("group")).gid
    except UserError as exc:
        raise StepFailed(f"--chown={chown}: {exc}") from None
    return uid, gid


def dest_is_dir(c: NativeContainer, dest: str) -> bool:
    info = rootfs.stat_path(c, dest)
    return info is not None and info.is_dir


def _tar_of(entries: Sequence[Entry], owner: tuple[int, int], chmod: int | None,
            fileobj: io.IOBase) -> None:
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[arg-type]
        for entry in entries:
            name = entry.dest.lstrip("/")
            if entry.source is not None:
                info = tar.gettarinfo(entry.source, arcname=name)
            else:
                info = tarfile.TarInfo(name)
                info.type = tarfile.DIRTYPE if entry.is_dir else tarfile.REGTYPE
                info.mode = 0o755 if entry.is_dir else 0o644
                info.size = len(entry.data or b"") if not entry.is_dir else 0
                info.mtime = int(time.time())
            info.uid, info.gid = owner
            info.uname = info.gname = ""
            if entry.mode is not None:
                info.mode = entry.mode
            elif chmod is not None and not info.issym():
                info.mode = chmod
            if info.isreg() and entry.source is not None:
                with open(entry.source, "rb") as f:
                    tar.addfile(info, f)
            elif info.isreg():
                tar.addfile(info, io.BytesIO(entry.data or b""))
            else:
                tar.addfile(info)


def write_entries(backend: NativeBackend, c: NativeContainer, entries: Sequence[Entry], *,
                  owner: tuple[int, int], chmod: int | None) -> str:
    """Write ``entries`` into the container's root and snapshot its writable layer."""
    with tempfile.SpooledTemporaryFile(_SPOOL, dir=str(backend.store.tmp_dir)) as buf:
        _tar_of(entries, owner, chmod, buf)  # type: ignore[arg-type]
        buf.seek(0)
        try:
            rootfs.copy_in(c, buf, "/", archive=True)  # type: ignore[arg-type]
        except PydockError as exc:
            raise StepFailed(str(exc)) from None
    return snapshot(backend, c)


def extract_into(c: NativeContainer, archive: str, dest: str) -> None:
    """ADD of a local tar archive: its entries (owners kept) below ``dest``."""
    try:
        with _decompressed(archive) as f:
            rootfs.copy_in(c, f, dest, archive=True)
    except PydockError as exc:
        raise StepFailed(f"cannot extract {os.path.basename(archive)}: {exc}") from None


def _decompressed(path: str) -> IO[bytes]:
    """The archive's tar stream, decompressed (gzip, bzip2 or xz, told by its magic bytes)."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    if magic.startswith(b"BZh"):
        return cast(IO[bytes], bz2.open(path, "rb"))
    if magic.startswith(b"\xfd7zXZ\x00"):
        return cast(IO[bytes], lzma.open(path, "rb"))
    return open(path, "rb")


def copy_from_image(c: NativeContainer, path: str) -> bytes:
    """A tar of ``path`` (file or directory, named by its basename) in another image."""
    buf = io.BytesIO()
    try:
        rootfs.copy_out(c, path, buf, follow_link=True)
    except PydockError as exc:
        raise StepFailed(f"{path}: {exc}") from None
    return buf.getvalue()


def retarget(tar_bytes: bytes, *, strip_top: bool, dest: str, owner: tuple[int, int] | None,
             chmod: int | None, fileobj: io.IOBase) -> None:
    """Rename a ``copy_from_image`` tar's members below ``dest`` (the top entry itself
    dropped when ``strip_top``: a directory's contents are copied)."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r") as src, \
            tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as out:  # type: ignore[arg-type]
        for member in src:
            top, _, rest = member.name.partition("/")
            if strip_top:
                if not rest:
                    continue
                member.name = posixpath.join(dest, rest).lstrip("/")
            else:
                member.name = (dest if not rest else posixpath.join(dest, rest)).lstrip("/")
            if member.islnk():
                _, _, link_rest = member.linkname.partition("/")
                member.linkname = posixpath.join(dest, link_rest).lstrip("/")
            if owner is not None:
                member.uid, member.gid = owner
                member.uname = member.gname = ""
            if chmod is not None and not member.issym():
                member.mode = chmod
            out.addfile(member, src.extractfile(member) if member.isreg() else None)
