"""Paths of an image's root filesystem read straight from its layer directories (no mount):
lookups, symlinks resolved inside the root (Docker's FollowSymlinkInScope) and small files."""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Sequence

from ..backends.native import layerview

_MAX_LINKS = 255


class PathError(Exception):
    """A path of the image cannot be resolved (a symlink loop)."""


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


class ImageFS:
    """The merged view of ``lowers`` (layer directories, top first), read-only."""

    def __init__(self, lowers: Sequence[str]) -> None:
        self.lowers = list(lowers)

    def find(self, path: str) -> tuple[str, os.stat_result] | None:
        """The host path and lstat of ``path`` (no symlink followed), or None if absent."""
        parts = _parts(path)
        for layer in self.lowers:
            status, st, below = layerview.layer_lookup(layer, parts)
            if status == "found" and st is not None:
                return os.path.join(layer, *parts), st
            if status == "blocked":
                return None
            parts = list(below)
        return None

    def lstat(self, path: str) -> os.stat_result | None:
        found = self.find(path)
        return None if found is None else found[1]

    def resolve(self, path: str) -> str:
        """``path`` with every symlink followed, never leaving the root (``..`` and absolute
        targets stay inside it); components that do not exist are kept as they are."""
        todo = deque(_parts(path))
        done: list[str] = []
        links = 0
        while todo:
            part = todo.popleft()
            if part == "..":
                if done:
                    done.pop()
                continue
            found = self.find("/".join([*done, part]))
            if found is not None and stat.S_ISLNK(found[1].st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise PathError(f"too many levels of symbolic links in {path}")
                target = os.readlink(found[0])
                if target.startswith("/"):
                    done = []
                todo.extendleft(reversed(_parts(target)))
                continue
            done.append(part)
        return "/" + "/".join(done)

    def is_dir(self, path: str) -> bool:
        """Whether ``path`` (symlinks followed) is a directory."""
        st = self.lstat(self.resolve(path))
        return st is not None and stat.S_ISDIR(st.st_mode)

    def missing(self, path: str) -> list[str]:
        """The directories from the top down that do not exist on the way to (and including)
        the already resolved ``path``."""
        out: list[str] = []
        parts = _parts(path)
        for i in range(1, len(parts) + 1):
            sub = "/" + "/".join(parts[:i])
            if out or self.lstat(sub) is None:
                out.append(sub)
        return out

    def read(self, path: str, limit: int = 1 << 20) -> str:
        """A small text file (symlinks followed); '' when absent or not a file."""
        found = self.find(self.resolve(path))
        if found is None or not stat.S_ISREG(found[1].st_mode):
            return ""
        try:
            with open(found[0], "rb") as f:
                return f.read(limit).decode(errors="replace")
        except OSError:
            return ""
