"""A native container's root filesystem seen from the host: diff, export, cp in/out, commit.

``diff`` and ``commit`` read the writable layer (``upper/``) directly.  Everything that needs
the merged view runs in a forked child that never touches the host's mount namespace:

- running container: the child joins the mount namespace of its PID 1 (``setns``), so it sees
  what the container sees (volumes, /etc/hosts); ``export`` additionally unshares a private
  copy and binds the root overlay alone, so mounts inside do not end up in the tar;
- created or exited container: the child unshares a mount namespace, mounts the overlay there
  (read-only ``lowerdir=upper:init:layers...`` for reads, the real upper dir with a scratch
  work dir for writes) and chroots into it.  The mount dies with the child.

Tar data streams through a pipe between the child and the parent; a failing child step is
reported as JSON over a second pipe (``{"step", "kind", "message"}``) and raised as
``ContainerError`` naming the step.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import signal
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal, NoReturn

from ...archive import file_tar, write_layer_tar
from ...errors import ContainerError, PydockError
from ...models import Image, ImageConfig, ImageRef
from ...procs import proc_start_time
from ...spec import DEFAULT_PATH
from . import syscalls as sc
from .hostview import is_host_reference, mount_host_view, plan_host_view
from .launch import ensure_init_layer
from .layerview import (
    is_opaque,
    is_whiteout,
    lower_lstat,
    lower_names,
    lstat_or_none,
)

if TYPE_CHECKING:
    from .backend import NativeContainer

__all__ = ["PathInfo", "commit", "copy_in", "copy_out", "diff", "export", "get_file",
           "put_file", "stat_path"]

# Mount points of the init layer (and what is mounted on them): never part of diff or commit.
INIT_PATHS = ("proc", "sys", "dev", "etc/hosts", "etc/hostname", "etc/resolv.conf")
# Export keeps these directories but not what is below them (like docker export).
EXPORT_SKIP = ("proc/", "sys/", "dev/")
_CHUNK = 1 << 16
_NOTFOUND = "notfound"

Mode = Literal["read", "write", "rootfs"]
Kind = Literal["A", "C", "D"]


def is_init_path(rel: str) -> bool:
    """True for an init-layer mount point or anything below it (``rel``: ``etc/hosts``)."""
    return any(rel == p or rel.startswith(p + "/") for p in INIT_PATHS)


# -- diff --------------------------------------------------------------------------------------


def _lowers(c: NativeContainer) -> list[str]:
    store_root = c.backend.store.root
    layers = store_root / "layers"
    # a host reference layer (pydock:host) shows the host's root (hostview.py)
    return [str(ensure_init_layer(store_root)),
            *("/" if is_host_reference(layers / n) else str(layers / n)
              for n in c.dir.config["layers"])]


def diff(c: NativeContainer) -> list[tuple[Kind, str]]:
    """``docker diff``: ``("A"|"C"|"D", "/path")`` for every change in the writable layer.

    A whiteout is a deletion (D); an entry that exists in the image is a change (C), and so
    is every directory holding a change; anything else was added (A).  Sorted by path;
    init-layer mount points (/proc, /dev, /etc/hosts, ...) are left out.
    """
    upper = str(c.dir.upper)
    lowers = _lowers(c)
    out: list[tuple[Kind, str]] = []

    def walk(parts: list[str], hidden_below: bool) -> None:
        path = os.path.join(upper, *parts)
        for name in sorted(os.listdir(path)):
            sub = [*parts, name]
            rel = "/".join(sub)
            if is_init_path(rel):
                continue
            full = os.path.join(path, name)
            st = os.lstat(full)
            if is_whiteout(st):
                if not hidden_below and lower_lstat(lowers, sub) is not None:
                    out.append(("D", "/" + rel))
                continue
            in_lower = not hidden_below and lower_lstat(lowers, sub) is not None
            out.append(("C" if in_lower else "A", "/" + rel))
            if stat.S_ISDIR(st.st_mode):
                opaque = is_opaque(full)
                if opaque and in_lower:
                    # The directory was deleted and made again: what it held is gone.
                    present = set(os.listdir(full))
                    for gone in sorted(lower_names(lowers, sub) - present):
                        if not is_init_path(f"{rel}/{gone}"):
                            out.append(("D", f"/{rel}/{gone}"))
                walk(sub, hidden_below or opaque or not in_lower)

    walk([], False)
    out.sort(key=lambda change: change[1])
    return out


# -- the child that sees the container's root --------------------------------------------------


@dataclass(frozen=True)
class _View:
    """How the child reaches the container's root, computed in the parent before fork."""

    ns_fd: int | None            # /proc/PID/ns/mnt of a running container's PID 1
    layers_dir: bytes            # chdir here so relative lowerdir names resolve
    overlay_options: bytes
    rootfs: bytes                # the (empty) mount point under the container's directory
    scratch: str | None          # a fresh work dir for a read-write mount, removed afterwards
    rootfs_only: bool            # running: bind the root overlay alone (no submounts)
    host_view: tuple[bytes, bool] | None = None  # stopped, of pydock:host: see hostview.py


class _Fail(Exception):
    """A child-side failure with a kind the parent maps to an error message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _plan(c: NativeContainer, mode: Mode) -> _View:
    deadline = time.monotonic() + 5
    state = c.state()
    while state.get("status") == "running":
        pid = int(state.get("pid") or 0)
        try:
            fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fd = -1
        if fd >= 0 and proc_start_time(pid) == state.get("pid_start"):
            return _View(fd, b"", b"", b"", None, mode == "rootfs")
        if fd >= 0:
            os.close(fd)
        if time.monotonic() > deadline:
            raise ContainerError(f"container {c.name} is running but its process {pid} "
                                 "cannot be found")
        time.sleep(0.005)  # it is exiting: its monitor records that in a moment
        state = c.state()
    store_root = c.backend.store.root
    init = os.path.relpath(ensure_init_layer(store_root), store_root / "layers")
    upper = str(c.dir.upper)
    layers = ":".join([init, *c.dir.config["layers"]])
    scratch = None
    if mode == "write":
        scratch = tempfile.mkdtemp(prefix=".cpwork-", dir=c.dir.rw_dir)
        options = f"lowerdir={layers},upperdir={upper},workdir={scratch}"
    else:
        options = f"lowerdir={upper}:{layers}"
    if len(options) > 4000:
        if scratch is not None:
            os.rmdir(scratch)
        raise ContainerError(f"container {c.name}: too many image layers for one overlay mount")
    return _View(None, bytes(store_root / "layers"), options.encode(), bytes(c.dir.rootfs),
                 scratch, False, plan_host_view(store_root, c.dir.config["layers"]))


def _enter(view: _View) -> None:
    """Child side: make the container's root our root (named steps, errors raised)."""
    step = "enter the container's mount namespace"
    try:
        if view.ns_fd is not None:
            sc.setns(view.ns_fd, sc.CLONE_NEWNS)
            os.close(view.ns_fd)
            os.chdir("/")
            if view.rootfs_only:
                step = "make a private mount namespace"
                sc.unshare(sc.CLONE_NEWNS)
                sc.mount(None, b"/", None, sc.MS_REC | sc.MS_PRIVATE)
                step = "bind the root filesystem"
                sc.mount(b"/", b"/proc", None, sc.MS_BIND)
                os.chroot("/proc")
                os.chdir("/")
            return
        step = "make a private mount namespace"
        sc.unshare(sc.CLONE_NEWNS)
        sc.mount(None, b"/", None, sc.MS_REC | sc.MS_PRIVATE)
        if view.host_view is not None:
            step = "mount the host view"
            mount_host_view(*view.host_view)
        step = "mount overlay"
        os.chdir(view.layers_dir)
        sc.mount(b"overlay", view.rootfs, b"overlay", 0, view.overlay_options)
        step = "chroot"
        os.chroot(view.rootfs)
        os.chdir("/")
    except OSError as exc:
        raise _Fail("setup", f"{step}: {exc.strerror or exc}") from None


def _child(view: _View, errfd: int, work: Callable[[], None]) -> NoReturn:
    """Body of the forked child; never returns."""
    code = 1
    try:
        try:
            signal.set_wakeup_fd(-1)
        except (ValueError, OSError):
            pass
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        _enter(view)
        work()
        code = 0
    except BaseException as exc:  # noqa: BLE001 - report everything, then exit
        if isinstance(exc, _Fail):
            doc = {"kind": exc.kind, "message": str(exc)}
        elif isinstance(exc, OSError):
            doc = {"kind": "os", "message": f"{exc.strerror or exc}"
                   + (f": {exc.filename}" if exc.filename else "")}
        else:
            doc = {"kind": "error", "message": f"{type(exc).__name__}: {exc}"}
        try:
            os.write(errfd, json.dumps(doc).encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def _run(c: NativeContainer, mode: Mode, work: Callable[[int], None],
         pump: Callable[[int], None], *, child_reads: bool) -> None:
    """Fork a child that enters the container's root and runs ``work(fd)``; the parent runs
    ``pump(fd)`` on the other end of a pipe.  Child errors become ContainerError."""
    view = _plan(c, mode)
    lock: int | None = None
    try:
        if view.scratch is not None:
            lock = _lock(c)
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        erfd, ewfd = os.pipe2(os.O_CLOEXEC)
        child_fd, parent_fd = (rfd, wfd) if child_reads else (wfd, rfd)
        pid = os.fork()
        if pid == 0:
            os.close(parent_fd)
            os.close(erfd)
            _child(view, ewfd, lambda: work(child_fd))
        os.close(child_fd)
        os.close(ewfd)
        try:
            pump(parent_fd)
        except BrokenPipeError:
            pass  # the child stopped reading: its report says why
        finally:
            os.close(parent_fd)  # on any error this ends the child (EOF or EPIPE)
            report = _read_all(erfd)
            _, status = os.waitpid(pid, 0)
        if report:
            doc = json.loads(report)
            if doc.get("kind") == _NOTFOUND:
                raise ContainerError(
                    f"Could not find the file {doc['message']} in container {c.name}")
            raise ContainerError(f"container {c.name}: {doc['message']}")
        if os.waitstatus_to_exitcode(status) != 0:
            raise ContainerError(f"container {c.name}: file access helper died "
                                 f"(status {os.waitstatus_to_exitcode(status)})")
    finally:
        if view.ns_fd is not None:
            os.close(view.ns_fd)
        if view.scratch is not None:
            shutil.rmtree(view.scratch, ignore_errors=True)
        if lock is not None:
            os.close(lock)


def _lock(c: NativeContainer) -> int:
    """Serialize read-write mounts of one stopped container (two overlays on one upper dir
    would be undefined behaviour)."""
    fd = os.open(c.dir.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _read_all(fd: int) -> bytes:
    chunks = []
    try:
        while chunk := os.read(fd, _CHUNK):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _copy_to_fd(src: IO[bytes], fd: int) -> None:
    while chunk := src.read(_CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]


def _copy_from_fd(fd: int, dst: IO[bytes]) -> None:
    while chunk := os.read(fd, _CHUNK):
        dst.write(chunk)


# -- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathInfo:
    """What ``stat_path`` found (like docker's X-Docker-Container-Path-Stat)."""

    name: str
    kind: Literal["file", "directory", "symlink", "other"]
    size: int
    mode: int
    link_target: str
    is_dir: bool                  # after following symlinks


def stat_path(c: NativeContainer, path: str) -> PathInfo | None:
    """Facts about ``path`` in the container (None when it does not exist)."""
    out = io.BytesIO()

    def work(fd: int) -> None:
        doc: dict[str, object] | None = None
        st = lstat_or_none(path)
        if st is not None:
            kind = ("directory" if stat.S_ISDIR(st.st_mode) else "file" if
                    stat.S_ISREG(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode)
                    else "other")
            doc = {"name": os.path.basename(path.rstrip("/")) or "/", "kind": kind,
                   "size": st.st_size, "mode": st.st_mode,
                   "link_target": os.readlink(path) if kind == "symlink" else "",
                   "is_dir": os.path.isdir(path)}
        os.write(fd, json.dumps(doc).encode())
        os.close(fd)

    _run(c, "read", work, lambda fd: _copy_from_fd(fd, out), child_reads=False)
    doc = json.loads(out.getvalue() or b"null")
    return None if doc is None else PathInfo(**doc)


def export(c: NativeContainer, fileobj: IO[bytes]) -> None:
    """Write the container's root filesystem as a tar (``docker export``).

    The contents of /proc, /sys and /dev and mounts inside the container are left out.
    A container of the host base image (pydock:host) is refused: its root is the host's.
    """
    if plan_host_view(c.backend.store.root, c.dir.config["layers"]) is not None:
        raise ContainerError(f"container {c.name} is based on the host view (pydock:host): "
                             "the host base layer cannot be exported (copy files out with "
                             "`pydock cp` instead)")

    def work(fd: int) -> None:
        with open(fd, "wb", buffering=_CHUNK) as out:
            write_layer_tar(Path("/"), out, whiteouts=False,
                            exclude=lambda rel: rel.startswith(EXPORT_SKIP))

    _run(c, "rootfs", work, lambda fd: _copy_from_fd(fd, fileobj), child_reads=False)


def copy_out(c: NativeContainer, path: str, fileobj: IO[bytes], *,
             follow_link: bool = False) -> None:
    """Write ``path`` (a file or a whole directory) from the container as a tar to
    ``fileobj``, members named after its basename (``docker cp CONTAINER:PATH -``).

    A path ending in ``/.`` writes the directory's contents without the directory itself
    (see ``archive_name``).
    ``follow_link``: copy what a symlink at ``path`` points to instead of the link.
    """
    name = archive_name(path)

    def work(fd: int) -> None:
        src = os.path.realpath(path) if follow_link else path
        st = lstat_or_none(src)
        if st is None:
            raise _Fail(_NOTFOUND, path)
        if path.endswith("/") and not os.path.isdir(src):
            raise _Fail("error", f"{path}: not a directory")
        with open(fd, "wb", buffering=_CHUNK) as out, \
                tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            _add_tree(tar, src, name if stat.S_ISDIR(st.st_mode) or name else
                      os.path.basename(src))

    _run(c, "read", work, lambda fd: _copy_from_fd(fd, fileobj), child_reads=False)


def get_file(c: NativeContainer, path: str) -> bytes:
    """The contents of the file ``path`` in the container (symlinks followed)."""
    out = io.BytesIO()

    def work(fd: int) -> None:
        try:
            src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise _Fail(_NOTFOUND, path) from None
        if stat.S_ISDIR(os.fstat(src).st_mode):
            os.close(src)
            raise _Fail("error", f"{path} is a directory")
        with open(src, "rb") as f, open(fd, "wb", buffering=_CHUNK) as dst:
            shutil.copyfileobj(f, dst, _CHUNK)

    _run(c, "read", work, lambda fd: _copy_from_fd(fd, out), child_reads=False)
    return out.getvalue()


def archive_name(path: str) -> str:
    """The name ``path`` gets in a ``cp`` tar: its basename; '' (contents only) for a path
    ending in ``/.`` or for ``/``."""
    if path.endswith("/.") or path.strip("/") == "":
        return ""
    return os.path.basename(path.rstrip("/"))


def _add_tree(tar: tarfile.TarFile, src: str, arcname: str) -> None:
    """Add ``src`` (recursively) as ``arcname`` ('' = only what is inside), numeric owners,
    no user database lookups (they would load the container's NSS modules)."""
    hardlinks: dict[tuple[int, int], str] = {}
    for full, name, st in _walk(src, arcname):
        if name == "":
            continue
        mode = st.st_mode
        info = tarfile.TarInfo(name)
        info.mode = stat.S_IMODE(mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = int(st.st_mtime)
        if stat.S_ISSOCK(mode):
            continue
        if not stat.S_ISDIR(mode) and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            if key in hardlinks:
                info.type, info.linkname = tarfile.LNKTYPE, hardlinks[key]
                tar.addfile(info)
                continue
            hardlinks[key] = name
        if stat.S_ISREG(mode):
            with open(full, "rb") as f:
                info.size = os.fstat(f.fileno()).st_size
                tar.addfile(info, f)
            continue
        if stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(full)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
        tar.addfile(info)


def _walk(src: str, arcname: str) -> Iterator[tuple[str, str, os.stat_result]]:
    st = os.lstat(src)
    yield src, arcname, st
    if stat.S_ISDIR(st.st_mode):
        for name in sorted(os.listdir(src)):
            yield from _walk(os.path.join(src, name), f"{arcname}/{name}" if arcname else name)


# -- writing -----------------------------------------------------------------------------------


def copy_in(c: NativeContainer, fileobj: IO[bytes], dest_dir: str, *,
            archive: bool = False) -> None:
    """Extract the tar stream ``fileobj`` into the existing directory ``dest_dir`` of the
    container (``docker cp - CONTAINER:DEST``), running or not.

    Files belong to root unless ``archive`` (keep the tar's uid/gid, ``cp -a``).  Entries
    that would land outside ``dest_dir`` (``..``, absolute names, through symlinks) are
    refused with ContainerError.
    """
    owner = None if archive else (0, 0)

    def work(fd: int) -> None:
        try:
            st = os.stat(dest_dir)
        except (FileNotFoundError, NotADirectoryError):
            raise _Fail(_NOTFOUND, dest_dir) from None
        if not stat.S_ISDIR(st.st_mode):
            raise _Fail("error", f"cannot copy into {dest_dir}: not a directory")
        try:
            with open(fd, "rb", buffering=_CHUNK) as src, \
                    tarfile.open(fileobj=src, mode="r|") as tar:
                safe_extract(tar, dest_dir, owner=owner, error=lambda m: _Fail("error", m))
        except tarfile.TarError as exc:
            raise _Fail("error", f"the input is not a valid tar stream ({exc})") from None

    _run(c, "write", work, lambda fd: _copy_to_fd(fileobj, fd), child_reads=True)


def put_file(c: NativeContainer, path: str, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to the file ``path`` in the container (its directory must exist)."""
    parent, tar = file_tar(path, data, mode)
    copy_in(c, io.BytesIO(tar), parent)


def safe_extract(tar: tarfile.TarFile, dest: str, *, owner: tuple[int, int] | None,
                 error: Callable[[str], Exception],
                 rename: Callable[[str], str] | None = None) -> None:
    """Extract a tar (a stream is fine) below ``dest``, refusing entries that escape it.

    ``owner`` replaces every entry's uid/gid (None keeps them, numerically).  ``rename``
    maps member names (e.g. the root entry of ``docker cp SRC DEST``).  An existing
    non-directory is replaced, never written through.
    """
    root = os.path.realpath(dest)
    dirs: list[tuple[tarfile.TarInfo, str]] = []
    trusted = getattr(tarfile, "fully_trusted_filter", None)
    kw = {"filter": trusted} if trusted is not None else {}

    def inside(path: str) -> bool:
        return path == root or path.startswith(root.rstrip("/") + "/")

    def target_of(name: str, what: str) -> str:
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if name.startswith("/") or ".." in parts:
            raise error(f"refusing to extract {what}: it escapes {dest}")
        target = os.path.join(root, *parts)
        if parts and not inside(os.path.realpath(os.path.dirname(target))):
            raise error(f"refusing to extract {what}: it goes through a symlink out of {dest}")
        return target

    for member in tar:
        tar.members.clear()  # type: ignore[attr-defined]  # a stream: keep no headers around
        if rename is not None:
            member.name = rename(member.name)
            if member.islnk():
                member.linkname = rename(member.linkname)
        target = target_of(member.name, repr(member.name))
        if owner is not None:
            member.uid, member.gid = owner
        if member.islnk():
            target_of(member.linkname, f"hard link {member.name!r} -> {member.linkname!r}")
        if target == root:  # "./": the destination itself keeps its owner and mode
            if not member.isdir():
                raise error(f"refusing to extract {member.name!r} over {dest}")
            continue
        st = lstat_or_none(target)
        if st is not None and not (stat.S_ISDIR(st.st_mode) and member.isdir()):
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(target)
            else:
                os.unlink(target)
        member.name = os.path.relpath(target, root)
        if member.islnk():
            member.linkname = os.path.relpath(target_of(member.linkname, "link"), root)
        tar.extract(member, root, set_attrs=not member.isdir(), numeric_owner=True,
                    **kw)  # type: ignore[arg-type]
        if member.isdir():
            dirs.append((member, target))
    for member, target in reversed(dirs):  # directory times last, as tar does
        tar.chown(member, target, True)
        tar.utime(member, target)
        tar.chmod(member, target)


# -- commit ------------------------------------------------------------------------------------


def container_config(image: ImageConfig, c: NativeContainer) -> ImageConfig:
    """The image config a commit records: the container's command, env, workdir, user and
    labels (like ``docker commit``), without what the runtime adds (HOSTNAME, PATH, TERM)."""
    spec = c.spec
    base_env = image.env_dict()
    runtime_added = {f"HOSTNAME={spec.hostname}", f"PATH={DEFAULT_PATH}", "TERM=xterm"}
    env = tuple(e for e in spec.env
                if not (e in runtime_added and e.partition("=")[0] not in base_env))
    working_dir = spec.working_dir
    if working_dir == "/" and not image.working_dir:
        working_dir = ""
    labels = dict(image.labels)
    labels.update(dict(spec.labels))
    return replace(image, env=env, cmd=spec.cmd, entrypoint=spec.entrypoint,
                   working_dir=working_dir, user=spec.user,
                   labels=tuple(sorted(labels.items())))


def commit(c: NativeContainer, *, ref: str | None = None, changes: Sequence[str] = (),
           message: str = "") -> Image:
    """Make an image of the container's image plus its writable layer (``docker commit``).

    Works on running and stopped containers (a running one is not paused: commit it at a
    quiet moment).  ``changes`` are Dockerfile lines (``CMD ["sh"]``, ``ENV A=1``) applied
    to the new config; ``ref`` tags the image.
    """
    if ref is not None:
        ImageRef.parse(ref)  # fail before the snapshot
    store = c.backend.store
    try:
        image = store.image(str(c.dir.config["image_id"]))
    except PydockError as exc:
        raise ContainerError(f"cannot commit container {c.name}: its image: {exc}") from exc
    config = container_config(image.config, c)
    if changes:
        from ...changes import apply_changes
        config = apply_changes(config, list(changes))
    diff_id = store.add_layer_dir(c.dir.upper, exclude=is_init_path)
    new = store.create_image(config, [*image.diff_ids, diff_id], history_comment=message,
                             base=image)
    if ref is not None:
        store.tag(new.id, ref)
        new = store.image(new.id)
    return new

