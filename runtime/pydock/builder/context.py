"""The build context: which files a build may read (``.dockerignore`` applied first), COPY source
patterns resolved against them, and the content digest that keys the layer cache."""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fnmatch import translate
from pathlib import Path

from ..dockerignore import IgnoreRules, walk_context
from ..dockerignore import load as load_rules


class ContextError(Exception):
    """A source is missing or outside the context; the builder adds the Dockerfile location."""


@dataclass(frozen=True)
class Match:
    """One COPY source resolved in the context: ``rel`` is ``""`` for the context root;
    ``is_dir`` means its contents are copied; ``wildcard`` that it came from a pattern."""

    rel: str
    is_dir: bool
    wildcard: bool


_GLOB_CHARS = re.compile(r"[*?\[]")


def has_wildcard(pattern: str) -> bool:
    return _GLOB_CHARS.search(pattern) is not None


def _component_regex(component: str) -> re.Pattern[str]:
    """Go's filepath.Match for one path component (``[^...]`` negation, no ``/`` crossing)."""
    return re.compile(translate(component.replace("[^", "[!")))


class BuildContext:
    """A context directory as the builder sees it: the included paths, sorted, parents first."""

    def __init__(self, root: str | os.PathLike[str], *, rules: IgnoreRules | None = None,
                 dockerfile: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ContextError(f"build context {os.fspath(root)!r} is not a directory")
        self.rules = rules if rules is not None else load_rules(self.root, dockerfile)
        self.paths: list[str] = list(walk_context(self.root, self.rules))
        self._included = set(self.paths)
        self._digests: dict[str, str] = {}

    # -- resolving sources ---------------------------------------------------------------------

    def resolve(self, source: str) -> list[Match]:
        """The context paths a COPY/ADD source names (a path or a Go-style glob)."""
        cleaned = posixpath.normpath(source.lstrip("/") or ".")
        if cleaned == ".." or cleaned.startswith("../"):
            raise ContextError(f"forbidden path outside the build context: {source}")
        if cleaned == ".":
            return [Match("", True, False)]
        if not has_wildcard(cleaned):
            return [self._literal(source, cleaned)]
        parts = cleaned.split("/")
        regexes = [_component_regex(p) for p in parts]
        found = []
        for rel in self.paths:
            comps = rel.split("/")
            if len(comps) == len(parts) and all(r.fullmatch(c) for r, c in zip(regexes, comps,
                                                                               strict=True)):
                found.append(Match(rel, self.is_dir(rel), True))
        if not found:
            raise ContextError(f"no source files were specified: no file in the context "
                               f"matches {source!r}")
        return found

    def _literal(self, source: str, rel: str) -> Match:
        full = self.root / rel
        if rel not in self._included or not os.path.lexists(full):
            why = "excluded by .dockerignore" if os.path.lexists(full) else "not found"
            raise ContextError(f"{source!r} {why} in the build context {self.root}")
        if os.path.islink(full):
            rel = self._follow(source, rel)
        return Match(rel, self.is_dir(rel), False)

    def _follow(self, source: str, rel: str) -> str:
        """A source that is a symlink is followed (as Docker does), within the context only."""
        target = os.path.realpath(self.root / rel)
        if target != str(self.root) and not target.startswith(f"{self.root}/"):
            raise ContextError(f"forbidden path outside the build context: {source} "
                               f"(a symlink to {target})")
        new_rel = os.path.relpath(target, self.root)
        new_rel = "" if new_rel == "." else new_rel
        if new_rel and new_rel not in self._included:
            raise ContextError(f"{source!r} points to {new_rel!r}, which is not in the context")
        return new_rel

    def is_implied(self, rel: str) -> bool:
        """Whether ``rel`` is an excluded directory sent only because something inside it is
        re-included (``!``): the docker CLI leaves it out of the context tar, so the daemon
        makes it 0755 (checked when copying, never when planning)."""
        return bool(rel) and self.rules.has_exceptions and self.rules.excluded(rel)

    def is_dir(self, rel: str) -> bool:
        full = self.root / rel if rel else self.root
        return stat.S_ISDIR(os.lstat(full).st_mode)

    def below(self, rel: str) -> Iterator[str]:
        """Included paths strictly below directory ``rel``, parents first."""
        if not rel:
            yield from self.paths
            return
        prefix = f"{rel}/"
        for path in self.paths:
            if path.startswith(prefix):
                yield path

    def full_path(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    # -- digests -------------------------------------------------------------------------------

    def digest(self, matches: Iterable[Match]) -> str:
        """sha256 over what the sources would copy: relative names, types, permission bits,
        file contents and symlink targets (not mtimes or owners, as BuildKit)."""
        h = hashlib.sha256()
        for match in matches:
            h.update(f"\0src:{match.rel}:{match.is_dir}".encode())
            rels = [match.rel] if not match.is_dir else [match.rel, *self.below(match.rel)]
            for rel in rels:
                h.update(self._entry_digest(rel).encode())
        return f"sha256:{h.hexdigest()}"

    def _entry_digest(self, rel: str) -> str:
        cached = self._digests.get(rel)
        if cached is not None:
            return cached
        full = self.full_path(rel)
        st = os.lstat(full)
        kind = stat.S_IFMT(st.st_mode)
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISREG(st.st_mode):
            content = _file_sha256(full)
        elif stat.S_ISLNK(st.st_mode):
            content = os.readlink(full)
        else:
            content = ""
        value = f"\0{rel}\0{kind:o}\0{mode:o}\0{content}"
        self._digests[rel] = value
        return value


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
