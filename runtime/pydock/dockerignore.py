"""``.dockerignore``: which paths of a build context are left out, by Docker's rules.

Reading (moby/patternmatcher ``ignorefile.ReadAll``): a line starting with ``#`` is a comment
(only in the first column); surrounding whitespace is trimmed; blank lines are skipped; ``!``
makes an exception (re-include); each pattern is cleaned like Go's ``filepath.Clean`` (``./a``
is ``a``, ``a/`` is ``a``, ``a/../b`` is ``b``) and a leading ``/`` is dropped, so every pattern is
relative to the context root.

Matching (moby/patternmatcher): ``*`` is any run of characters but ``/``, ``?`` one character
but ``/``, ``[...]`` a character class (``[^...]`` negated), ``\\`` escapes the next character,
``**`` any number of directories (``**/x``, ``a/**``, ``a/**/b``).  The last matching pattern
wins; a path is also excluded when one of its parent directories is, unless an exception
re-includes it.  Patterns match files and directories alike.

Walking (BuildKit's fsutil): an excluded directory is not descended into, unless an exception
pattern could match something inside it; then the walk goes on, and the excluded directory
itself is sent only when something inside it is.

Not applied here, the builder's business: Docker still sends the Dockerfile and the
``.dockerignore`` to the builder when they are excluded (they are needed to build), but
``COPY``/``ADD`` do not see them then.  ``<Dockerfile name>.dockerignore`` next to the Dockerfile
takes precedence over the context's ``.dockerignore`` (:func:`load`).
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import DockerfileError

_PATTERN_CHARS = frozenset("*[]?^\\")


@dataclass(frozen=True)
class Pattern:
    """One cleaned pattern; ``exception`` for a ``!`` line."""

    text: str
    exception: bool
    regex: re.Pattern[str] | None
    kind: str  # "exact" | "prefix" | "suffix" | "regex"

    def matches(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix[:1] == "/" and path == suffix[1:])
        assert self.regex is not None
        return self.regex.match(path) is not None

    @property
    def without_trailing_glob(self) -> str:
        text = self.text
        text = text[:-3] if text.endswith("/**") else text
        return text[:-2] if text.endswith("/*") else text


def _clean(path: str) -> str:
    """Go's ``filepath.Clean`` for ``/``-separated paths."""
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):  # POSIX keeps a leading "//", Go does not
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def _compile(text: str) -> tuple[str, re.Pattern[str] | None]:
    """The match kind and (for ``regex``) the regex of a cleaned pattern."""
    out = ["^"]
    kind = "exact"
    i, n = 0, len(text)
    first = True
    while i < n:
        ch = text[i]
        i += 1
        if ch == "*":
            if i < n and text[i] == "*":
                i += 1
                if i < n and text[i] == "/":
                    i += 1
                if i >= n:  # "**" at the end matches everything below
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        out.append(".*")
                        kind = "regex"
                else:
                    out.append("(.*/)?")
                    kind = "regex"
                if first:
                    kind = "suffix"
            else:
                out.append("[^/]*")
                kind = "regex"
        elif ch == "?":
            out.append("[^/]")
            kind = "regex"
        elif ch in ".+()|{}$":
            out.append("\\" + ch)
        elif ch == "\\":
            if i < n:  # Go hands "\x" to its regexp as is; so does this
                out.append("\\" + text[i])
                i += 1
                kind = "regex"
            else:
                out.append("\\\\")
        elif ch in "[]":
            out.append(ch)
            kind = "regex"
        else:
            out.append(ch)  # "^" too: it negates a class, as in Go
        first = False
    if kind != "regex":
        return kind, None
    out.append("$")
    return kind, re.compile("".join(out), re.DOTALL)


def _class_char(text: str, i: int) -> int:
    """Go's ``getEsc``: one (possibly escaped) character of a class; the index after it."""
    if i >= len(text) or text[i] in "-]":
        raise ValueError("syntax error in pattern")
    if text[i] == "\\":
        i += 1
        if i >= len(text):
            raise ValueError("syntax error in pattern")
    i += 1
    if i >= len(text):
        raise ValueError("syntax error in pattern (unclosed '[')")
    return i


def _check_syntax(text: str) -> None:
    """Reject what Go's ``filepath.Match`` calls a bad pattern (unclosed or empty class, bad
    range, trailing ``\\``)."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            if i + 1 >= n:
                raise ValueError("syntax error in pattern (trailing backslash)")
            i += 2
        elif ch == "[":
            i += 1
            if i < n and text[i] == "^":
                i += 1
            ranges = 0
            while not (i < n and text[i] == "]" and ranges):
                i = _class_char(text, i)
                if text[i] == "-":
                    i = _class_char(text, i + 1)
                ranges += 1
            i += 1
        else:
            i += 1


def read_patterns(text: str) -> list[str]:
    """The pattern lines of a ``.dockerignore`` (``ignorefile.ReadAll``), ``!`` kept."""
    return [pattern for _, pattern in _numbered_patterns(text)]


def _numbered_patterns(text: str) -> list[tuple[int, str]]:
    patterns: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines()):
        if number == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip()
        if line:
            line = _clean(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
        patterns.append((number + 1, "!" + line if invert else line))
    return patterns


class IgnoreRules:
    """Compiled ``.dockerignore`` patterns.

    >>> rules = IgnoreRules.parse("*.pyc\\nbuild\\n!build/keep")
    >>> rules.excluded("a.pyc"), rules.excluded("build/x"), rules.excluded("build/keep")
    (True, True, False)
    """

    def __init__(self, patterns: Sequence[str], *, path: str = ".dockerignore",
                 lines: Sequence[int] | None = None) -> None:
        """Compile ``patterns`` (as :func:`read_patterns` gives them); ``lines`` are their line
        numbers in ``path``, for errors (``DockerfileError``)."""
        compiled: list[Pattern] = []
        for index, raw in enumerate(patterns):
            line = lines[index] if lines is not None else None
            text = raw.strip()
            if not text:
                continue
            text = _clean(text)
            exception = text.startswith("!")
            if exception:
                if len(text) == 1:
                    raise DockerfileError('illegal exclusion pattern: "!"', path=path, line=line)
                text = text[1:]
            try:
                _check_syntax(text)
                kind, regex = _compile(text)
            except (ValueError, re.error) as exc:
                raise DockerfileError(f"bad pattern {raw!r}: {exc}", path=path,
                                      line=line) from None
            compiled.append(Pattern(text, exception, regex, kind))
        self.patterns: tuple[Pattern, ...] = tuple(compiled)
        self.has_exceptions = any(p.exception for p in compiled)
        # BuildKit prunes an excluded directory unless an exception could match inside it; when
        # an exception has wildcards (besides a trailing /* or /**) it cannot tell, so it walks.
        self._exceptions_are_prefixes = not any(
            p.exception and _PATTERN_CHARS.intersection(p.without_trailing_glob)
            for p in compiled
        )

    @classmethod
    def parse(cls, text: str, *, path: str = ".dockerignore") -> IgnoreRules:
        """Rules from the text of a ``.dockerignore``; ``DockerfileError`` names a bad line."""
        numbered = _numbered_patterns(text)
        return cls([p for _, p in numbered], path=path, lines=[n for n, _ in numbered])

    def __bool__(self) -> bool:
        return bool(self.patterns)

    # -- matching ---------------------------------------------------------------------------

    def _step(self, path: str, parent: tuple[bool, ...] | None) -> tuple[bool, tuple[bool, ...]]:
        """patternmatcher's ``MatchesUsingParentResults``: the result for ``path`` and, per
        pattern, whether it matched ``path`` or one of its parents (fed to the children)."""
        matched = False
        info: list[bool] = []
        for index, pattern in enumerate(self.patterns):
            match = parent[index] if parent else False
            if not match:
                if pattern.exception != matched:
                    info.append(False)
                    continue
                match = pattern.matches(path)
                if not match and not parent:
                    parent_dir = posixpath.dirname(path)
                    if parent_dir:
                        parts = parent_dir.split("/")
                        match = any(pattern.matches("/".join(parts[: k + 1]))
                                    for k in range(len(parts)))
            info.append(match)
            if match:
                matched = not pattern.exception
        return matched, tuple(info)

    def excluded(self, relpath: str, *, is_dir: bool = False) -> bool:
        """Whether ``relpath`` (``/``-separated, relative to the context) is left out.

        ``is_dir`` is accepted for callers that know the type; Docker's patterns do not tell files
        from directories, so the answer is the same.  The context root itself is never excluded.
        """
        del is_dir
        path = _clean(relpath.replace(os.sep, "/")).lstrip("/")
        if path in (".", ""):
            return False
        info: tuple[bool, ...] | None = None
        matched = False
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            matched, info = self._step("/".join(parts[:depth]), info)
        return matched

    def may_include_below(self, reldir: str) -> bool:
        """Whether the walk must descend into the excluded directory ``reldir``."""
        if not self.has_exceptions:
            return False
        if not self._exceptions_are_prefixes:
            return True
        prefix = reldir.rstrip("/") + "/"
        return any(p.exception and (p.without_trailing_glob + "/").startswith(prefix)
                   for p in self.patterns)


def load(context: str | os.PathLike[str], dockerfile: str | os.PathLike[str] | None = None
         ) -> IgnoreRules:
    """The rules for a build: ``<dockerfile>.dockerignore`` if it exists, else the context's
    ``.dockerignore``, else no rules."""
    candidates = []
    if dockerfile is not None:
        candidates.append(Path(f"{os.fspath(dockerfile)}.dockerignore"))
    candidates.append(Path(context) / ".dockerignore")
    for candidate in candidates:
        try:
            text = candidate.read_text(encoding="utf-8", errors="surrogateescape")
        except (FileNotFoundError, NotADirectoryError):
            continue
        return IgnoreRules.parse(text, path=str(candidate))
    return IgnoreRules([])


def walk_context(
    root: str | os.PathLike[str], rules: IgnoreRules | None = None
) -> Iterator[str]:
    """The relative paths (``/``-separated) of a context that are sent, parents before children,
    names sorted, symlinks not followed.  ``rules`` defaults to the context's ``.dockerignore``.

    Excluded directories are pruned unless an exception may match below them; an excluded
    directory that holds an included path is yielded just before that path (BuildKit sends it
    so the path has a parent).
    """
    top = Path(root)
    if rules is None:
        rules = load(top)
    if not rules:
        yield from _walk_all(top, "")
        return
    yield from _walk(top, "", rules, None, [])


def _walk_all(top: Path, prefix: str) -> Iterator[str]:
    for name, is_dir in _entries(top / prefix if prefix else top):
        rel = f"{prefix}{name}"
        yield rel
        if is_dir:
            yield from _walk_all(top, rel + "/")


def _entries(directory: Path) -> list[tuple[str, bool]]:
    out = []
    with os.scandir(directory) as it:
        for entry in it:
            try:
                is_dir = stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode)
            except FileNotFoundError:
                continue
            out.append((entry.name, is_dir))
    out.sort()
    return out


def _walk(top: Path, prefix: str, rules: IgnoreRules, parent: tuple[bool, ...] | None,
          pending: list[str]) -> Iterator[str]:
    """``pending`` holds excluded ancestors not yet yielded (yielded once something below is)."""
    for name, is_dir in _entries(top / prefix if prefix else top):
        rel = f"{prefix}{name}"
        excluded, info = rules._step(rel, parent)
        if excluded:
            if is_dir and rules.may_include_below(rel):
                pending.append(rel)
                yield from _walk(top, rel + "/", rules, info, pending)
                if pending and pending[-1] == rel:
                    pending.pop()
            continue
        if pending:
            yield from pending
            pending.clear()
        yield rel
        if is_dir:
            yield from _walk(top, rel + "/", rules, info, pending)
