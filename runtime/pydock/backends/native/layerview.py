"""The merged view of overlay lower directories, read without mounting them.

Whiteouts (0/0 character devices), opaque directories and redirects are followed as
overlayfs does; used for diff and copy (rootfs.py) and to read an image's /etc/passwd
before a container starts (launch.py).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

OPAQUE_XATTR = "trusted.overlay.opaque"
REDIRECT_XATTR = "trusted.overlay.redirect"


def lstat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def layer_lookup(layer: str, parts: Sequence[str]
                  ) -> tuple[str, os.stat_result | None, Sequence[str]]:
    """("found", stat) | ("absent", None): look further down | ("blocked", None): a whiteout,
    a file on the way or an opaque directory hides the path in the layers below.  The third
    item is where the layers below hold the path (a redirect xattr renames it: pydock:host
    shows the interpreter's prefix through one, see sources/host.py)."""
    path = layer
    opaque = False
    below = parts
    for i, part in enumerate(parts):
        path = os.path.join(path, part)
        st = lstat_or_none(path)
        if st is None:
            return ("blocked" if opaque else "absent"), None, below
        if is_whiteout(st):
            return "blocked", None, below
        if stat.S_ISDIR(st.st_mode) and (target := redirect(path)):
            head = target.strip("/").split("/") if target.startswith("/") else \
                [*parts[:i], target]
            below, opaque = [*head, *parts[i + 1:]], False
        if i == len(parts) - 1:
            return "found", st, below
        if not stat.S_ISDIR(st.st_mode):
            return "blocked", None, below
        opaque = opaque or is_opaque(path)
    return "found", os.lstat(layer), below


def redirect(path: str) -> str:
    try:
        return os.getxattr(path, REDIRECT_XATTR, follow_symlinks=False).decode()
    except OSError:
        return ""


def lower_lstat(lowers: Sequence[str], parts: Sequence[str]) -> os.stat_result | None:
    """The entry ``parts`` in the merged view of ``lowers`` (top first); None if absent."""
    for layer in lowers:
        status, st, parts = layer_lookup(layer, parts)
        if status != "absent":
            return st
    return None


def lower_names(lowers: Sequence[str], parts: Sequence[str]) -> set[str]:
    """The names in directory ``parts`` of the merged view of ``lowers``."""
    names: set[str] = set()
    seen: set[str] = set()
    for layer in lowers:
        status, st, below = layer_lookup(layer, parts)
        if status == "absent":
            parts = below
            continue
        if st is None or not stat.S_ISDIR(st.st_mode):
            break
        path = os.path.join(layer, *parts)
        parts = below
        for name in os.listdir(path):
            if name not in seen:
                seen.add(name)
                if not is_whiteout(os.lstat(os.path.join(path, name))):
                    names.add(name)
        if is_opaque(path):
            break
    return names


def lower_file(lowers: Sequence[str], parts: Sequence[str]) -> str | None:
    """Where the regular file ``parts`` of the merged view of ``lowers`` is stored: the
    path in the top layer holding it, "" when the view has no such entry, None when it
    is something else (a directory, a symlink: left to whoever reads it in the mount)."""
    for layer in lowers:
        status, st, below = layer_lookup(layer, parts)
        if status == "absent":
            parts = below
            continue
        if st is None:
            return ""
        return os.path.join(layer, *parts) if stat.S_ISREG(st.st_mode) else None
    return ""
