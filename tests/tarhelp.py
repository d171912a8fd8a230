"""Helpers for the store and archive tests: build layer tarballs in memory, snapshot trees."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Entry:
    """One tar member to write (a small, readable stand-in for TarInfo)."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 1_600_000_000
    linkname: str = ""
    dev: tuple[int, int] = (0, 0)
    xattrs: dict[str, bytes] = field(default_factory=dict)


def d(name: str, mode: int = 0o755, **kw: Any) -> Entry:
    return Entry(name, tarfile.DIRTYPE, mode=mode, **kw)


def f(name: str, data: bytes = b"", mode: int = 0o644, **kw: Any) -> Entry:
    return Entry(name, tarfile.REGTYPE, data=data, mode=mode, **kw)


def sym(name: str, target: str, **kw: Any) -> Entry:
    return Entry(name, tarfile.SYMTYPE, linkname=target, mode=0o777, **kw)


def hard(name: str, target: str) -> Entry:
    return Entry(name, tarfile.LNKTYPE, linkname=target)


def tar_bytes(*entries: Entry) -> bytes:
    """A PAX tar of ``entries``, in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type, info.mode, info.uid, info.gid = e.type, e.mode, e.uid, e.gid
            info.mtime, info.linkname = e.mtime, e.linkname
            info.devmajor, info.devminor = e.dev
            info.size = len(e.data)
            info.pax_headers = {
                f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                for k, v in e.xattrs.items()
            }
            tar.addfile(info, io.BytesIO(e.data) if e.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything that matters about a tree: types, modes, owners, mtimes, links, xattrs, data."""
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            xattrs = {
                n: os.getxattr(path, n, follow_symlinks=False)
                for n in sorted(os.listxattr(path, follow_symlinks=False))
            }
            extra: object = None
            if stat.S_ISREG(st.st_mode):
                extra = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                if st.st_nlink > 1:
                    extra = (extra, inodes.setdefault(st.st_ino, rel))
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(path)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                extra = (os.major(st.st_rdev), os.minor(st.st_rdev))
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                        st.st_gid, int(st.st_mtime), extra, xattrs)
    return out


def store_state(root: Path) -> dict[str, bytes | None]:
    """Paths (and file contents) of a store's images, layers and tags, to compare before/after."""
    state: dict[str, bytes | None] = {}
    for sub in ("images", "layers"):
        for path in sorted((root / sub).iterdir()):
            is_json = path.suffix == ".json"
            state[str(path.relative_to(root))] = path.read_bytes() if is_json else None
    tags = root / "tags.json"
    state["tags.json"] = tags.read_bytes() if tags.exists() else None
    return state
