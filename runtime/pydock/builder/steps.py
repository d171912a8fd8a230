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
import stat
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, cast

from ..backends.native import layerview, rootfs
from ..backends.native.backend import NativeBackend, NativeContainer
from ..errors import PydockError
from ..models import Image, Mount
from ..spec import RunOptions
from .paths import ImageFS

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
             skip_empty_dirs: Mapping[str, tuple[int, int, int] | None] | None = None,
             discard: Sequence[str] = ()) -> str | None:
    """The container's writable layer as a store layer (injected /etc files left out), or
    None when it holds no change (Docker then adds no layer, only a history entry).

    ``skip_empty_dirs``: RUN mount points and their parents, with the (mode, uid, gid) the
    image has for them (None: absent); left out while they hold nothing else and the step
    did not change them.  ``discard``: paths (relative, e.g. ``data``) whose changes are
    dropped, the directory itself included (volumes: see ``run``)."""
    upper = c.dir.upper
    skip = skip_empty_dirs or {}
    dropped = tuple(discard)

    def hollow(rel: str) -> bool:
        path = os.path.join(upper, rel)
        if rel not in skip or os.path.islink(path) or not os.path.isdir(path):
            return False
        st = os.lstat(path)
        if skip[rel] is not None and skip[rel] != (st.st_mode, st.st_uid, st.st_gid):
            return False
        return all(hollow(f"{rel}/{name}") for name in os.listdir(path))

    def exclude(rel: str) -> bool:
        return rootfs.is_init_path(rel) or hollow(rel) or \
            any(rel == d or rel.startswith(f"{d}/") for d in dropped)

    if not any(not exclude(name) for name in os.listdir(upper)):
        return None
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
    volumes: tuple[str, ...] = ()   # the image's VOLUMEs: their changes are dropped
    shown_args: tuple[tuple[str, str], ...] = ()  # build args named in the history


def run(backend: NativeBackend, image: Image, step: Run, *,
        output: Callable[[bytes], None], mounts: Sequence[Mount] = ()) -> str | None:
    """Run ``step`` in a container of ``image``; stream its output (stdout and stderr
    together) to ``output``; return the diff_id of what it changed (None: nothing).
    ``StepFailed`` with the exit code and the last lines of output when it fails.  Mount
    points made for ``mounts`` stay out of the layer.

    The image's volumes behave as in the classic builder, where each is an anonymous volume
    of the step's container: what the step changes in them is dropped, and a volume path
    missing from the image appears in the layer as an empty directory (its mount point)."""
    opts = RunOptions(command=list(step.argv), entrypoint=None, env=list(step.env),
                      user=step.user or None, working_dir=step.workdir or None,
                      network=step.network, hostname="buildkitsandbox", mounts=list(mounts))
    lowers = [str(backend.store.layers_dir / n) for n in backend.store.layer_names(image)]
    made: dict[str, tuple[int, int, int] | None] = {}
    for m in mounts:  # a target and its parents: absent from the image, or as the image has it
        parts = m.target.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            st = layerview.lower_lstat(lowers, parts[:i])
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
        discard = _volume_points(c, lowers, step.volumes)
        return snapshot(backend, c, skip_empty_dirs=made, discard=discard)


def _volume_points(c: NativeContainer, lowers: Sequence[str], volumes: Sequence[str]
                   ) -> list[str]:
    """Prepare the upper dir for ``snapshot(discard=...)``: a volume path absent from the
    image becomes an empty 0755 root directory (with its missing parents), as Docker's mount
    point; returns what to discard (what is below those, and existing volume paths)."""
    discard = []
    upper = str(c.dir.upper)
    for volume in sorted(set(volumes)):
        parts = [p for p in posixpath.normpath("/" + volume).split("/") if p]
        if not parts:
            continue
        rel = "/".join(parts)
        if layerview.lower_lstat(lowers, parts) is not None:
            discard.append(rel)
            continue
        for i in range(1, len(parts) + 1):
            path = os.path.join(upper, *parts[:i])
            if i < len(parts) and layerview.lower_lstat(lowers, parts[:i]) is not None:
                continue
            st = layerview.lstat_or_none(path)
            if st is not None and not stat.S_ISDIR(st.st_mode):
                os.unlink(path)
                st = None
            if st is None:
                os.mkdir(path)
            os.chown(path, 0, 0, follow_symlinks=False)
            os.chmod(path, 0o755)
        full = os.path.join(upper, *parts)
        for name in os.listdir(full):
            discard.append(f"{rel}/{name}")
    return discard


# -- COPY / ADD --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One thing to write: a file of the host (``source``), or ``data``, or a directory."""

    dest: str                       # absolute path in the image
    source: str | None = None       # host path (context file, downloaded file)
    data: bytes | None = None
    mode: int | None = None         # None: the source's mode
    is_dir: bool = False
    owner: tuple[int, int] | None = None  # None: the step's owner


def owner_of(chown: str | None, fs: ImageFS) -> tuple[int, int]:
    """``--chown=user[:group]`` as numbers, names looked up in the image's /etc files.

    A user without a group: the group of the same name (the classic builder's rule), else
    the user's primary group (BuildKit's), else the uid for a number."""
    if not chown:
        return 0, 0
    parts = chown.split(":")
    if len(parts) > 2 or not parts[0]:
        raise StepFailed(f"invalid --chown={chown}: expected user[:group]")
    user, group = parts[0], parts[1] if len(parts) == 2 else ""
    passwd = [line.split(":") for line in fs.read("/etc/passwd").splitlines()]
    entry = None
    if user.isdigit():
        uid = int(user)
    else:
        entry = next((row for row in passwd if len(row) >= 4 and row[0] == user), None)
        if entry is None or not entry[2].isdigit():
            raise StepFailed(f"--chown={chown}: unable to find user {user}: no matching "
                             "entries in passwd file")
        uid = int(entry[2])
    name = group or user
    if name.isdigit():
        return uid, int(name)
    groups = [line.split(":") for line in fs.read("/etc/group").splitlines()]
    row = next((g for g in groups if len(g) >= 3 and g[0] == name and g[2].isdigit()), None)
    if row is not None:
        return uid, int(row[2])
    if not group and entry is not None and entry[3].isdigit():
        return uid, int(entry[3])
    raise StepFailed(f"--chown={chown}: unable to find group {name}: no matching entries "
                     "in group file")


def user_owner(user: str, fs: ImageFS) -> tuple[int, int]:
    """The owner BuildKit gives what it makes for ``USER user[:group]`` (WORKDIR): a name's
    uid and primary group from the image's passwd (0:0 if it is not there), a number as
    uid and gid; a group by name or number replaces the gid."""
    if not user:
        return 0, 0
    name, _, group = user.partition(":")
    uid = gid = 0
    if name.isdigit():
        uid = gid = int(name)
    else:
        for row in (line.split(":") for line in fs.read("/etc/passwd").splitlines()):
            if len(row) >= 4 and row[0] == name and row[2].isdigit() and row[3].isdigit():
                uid, gid = int(row[2]), int(row[3])
                break
    if group.isdigit():
        gid = int(group)
    elif group:
        for row in (line.split(":") for line in fs.read("/etc/group").splitlines()):
            if len(row) >= 3 and row[0] == group and row[2].isdigit():
                gid = int(row[2])
                break
    return uid, gid


def without_setid(mode: int) -> int:
    """``mode`` after a chown by root, as Linux leaves a non-directory: set-user-ID
    dropped, set-group-ID too when the group may execute it."""
    mode &= ~stat.S_ISUID
    if mode & stat.S_IXGRP:
        mode &= ~stat.S_ISGID
    return mode


def _tar_of(entries: Sequence[Entry], owner: tuple[int, int], chmod: int | None,
            fileobj: io.IOBase, *, strip_setid: bool = False) -> None:
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
            info.uid, info.gid = entry.owner or owner
            info.uname = info.gname = ""
            if entry.mode is not None:
                info.mode = entry.mode
            elif chmod is not None and not info.issym():
                info.mode = chmod
            elif strip_setid and (info.isreg() or info.islnk()):
                info.mode = without_setid(info.mode)
            if info.isreg() and entry.source is not None:
                with open(entry.source, "rb") as f:
                    tar.addfile(info, f)
            elif info.isreg():
                tar.addfile(info, io.BytesIO(entry.data or b""))
            else:
                tar.addfile(info)


def write_entries(c: NativeContainer, entries: Sequence[Entry], *, owner: tuple[int, int],
                  chmod: int | None, strip_setid: bool = False) -> None:
    """Write ``entries`` (parents first) into the container's root, owned by ``owner``."""
    spool = c.backend.store.tmp_dir
    with tempfile.SpooledTemporaryFile(_SPOOL, dir=str(spool)) as buf:
        _tar_of(entries, owner, chmod, buf, strip_setid=strip_setid)  # type: ignore[arg-type]
        buf.seek(0)
        try:
            rootfs.copy_in(c, buf, "/", archive=True)  # type: ignore[arg-type]
        except PydockError as exc:
            raise StepFailed(str(exc)) from None


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
            elif owner is not None and (member.isreg() or member.islnk()):
                member.mode = without_setid(member.mode)
            out.addfile(member, src.extractfile(member) if member.isreg() else None)
