"""Docker's variable expansion and shell-word processing, as BuildKit's shell lexer does it.

The rules follow moby/buildkit ``frontend/dockerfile/shell/lex.go``:

- ``$NAME``, ``${NAME}``; a name is letters, digits and ``_``; ``$1`` reads all the digits; the
  special parameters ``$@ $* $# $? $- $$ $! $0`` are one character; ``$`` before anything else
  (``$.``, ``$`` at the end) stays a literal ``$``.  An unset variable expands to ``""``.
- ``${NAME:-word}`` / ``${NAME-word}``: word when unset or empty / when unset;
  ``${NAME:+word}`` / ``${NAME+word}``: word when set and non-empty / when set;
  ``${NAME:?msg}`` / ``${NAME?msg}``: an error when unset or empty / when unset;
  ``${NAME#pat}``, ``${NAME##pat}``, ``${NAME%pat}``, ``${NAME%%pat}``: remove the shortest /
  longest matching prefix / suffix (``*`` and ``?`` wildcards); ``${NAME/pat/repl}`` and
  ``${NAME//pat/repl}``: replace the first / every match.  Other modifiers (``:=``, ``${X:Y}``)
  are errors, as in BuildKit.
- Single quotes keep everything literal; double quotes keep everything but ``$`` and the escape
  character, which escapes only ``"``, ``$`` and itself there; outside quotes the escape character
  (``\\`` or the `` ` `` chosen by ``# escape=``) escapes any character.
- Word splitting (:func:`split_words`, what EXPOSE uses) happens after expansion: whitespace that
  came from a variable or an unquoted part splits, quoted and escaped whitespace does not.

Which instructions expand which parts: :data:`EXPANDED_ARGS` and :data:`EXPANDED_FLAGS`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from .errors import DockerfileError

#: Instructions whose arguments Docker expands (Dockerfile reference, "Environment replacement").
#: RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK and MAINTAINER are never expanded (RUN's shell does its
#: own expansion at run time); ONBUILD is expanded when its trigger runs in the child build, by
#: the trigger's own rule.  FROM's image (and ``--platform``) is expanded with the global ARGs only.
EXPANDED_ARGS: frozenset[str] = frozenset(
    {"ADD", "ARG", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER", "VOLUME",
     "WORKDIR"}
)

#: Flags whose values BuildKit expands, by instruction.
EXPANDED_FLAGS: Mapping[str, frozenset[str]] = {
    "ADD": frozenset({"chown", "chmod", "checksum"}),
    "COPY": frozenset({"from", "chown", "chmod"}),
    "FROM": frozenset({"platform"}),
    "RUN": frozenset({"mount"}),
}

#: ARGs every build knows without an ``ARG`` line; they are left out of the image's history and
#: config (Docker: "Predefined ARGs").  Set only by ``--build-arg``.
PROXY_ARGS: tuple[str, ...] = (
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
    "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
)

#: ARGs BuildKit defines in the global scope from the build and target platforms; a stage sees
#: one only after ``ARG NAME`` (without a value) inside it.
PLATFORM_ARGS: tuple[str, ...] = (
    "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
    "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT",
)

_EOF = ""
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
_NOT_GO_SPACE = frozenset("\x1c\x1d\x1e\x1f")  # Python calls them space, Go does not


def _is_space(ch: str) -> bool:
    return ch.isspace() and ch not in _NOT_GO_SPACE


class _Words:
    """Accumulates the split words alongside the expanded string (BuildKit's wordsStruct)."""

    def __init__(self) -> None:
        self.word = ""
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if _is_space(ch):
            if self.in_word and self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.word += ch
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw_string(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def get(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


class _Error(Exception):
    """A lexing error; the caller wraps it with the word that failed."""


@dataclass
class _Lexer:
    """One pass over one word; options mirror BuildKit's ``Lex`` fields."""

    text: str
    env: Mapping[str, str]
    escape: str = "\\"
    raw_quotes: bool = False
    raw_escapes: bool = False
    process_quotes: bool = True
    skip_unset: bool = False
    pos: int = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else _EOF

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    def lookup(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            return self.env[name], True
        return "", False

    # -- the grammar ----------------------------------------------------------------------

    def stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            return self._stop_on(stop)
        finally:
            self.raw_escapes = saved

    def _stop_on(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        while (ch := self.peek()) != _EOF:
            if stop and ch == stop:
                self.next()
                return "".join(result), words.get()
            if ch == "$":
                value = self.dollar()
                result.append(value)
                words.add_string(value)
            elif self.process_quotes and ch in "'\"":
                value = self.single_quote() if ch == "'" else self.double_quote()
                result.append(value)
                words.add_raw_string(value)
            else:
                ch = self.next()
                if ch == self.escape:
                    if self.raw_escapes:
                        words.add_raw_char(ch)
                        result.append(ch)
                    ch = self.next()
                    if ch == _EOF:
                        break
                    words.add_raw_char(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop:
            raise _Error(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.get()

    def single_quote(self) -> str:
        out: list[str] = []
        ch = self.next()
        if self.raw_quotes:
            out.append(ch)
        while True:
            ch = self.next()
            if ch == _EOF:
                raise _Error("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        out: list[str] = []
        ch = self.next()
        if self.raw_quotes:
            out.append(ch)
        while True:
            peek = self.peek()
            if peek == _EOF:
                raise _Error("unexpected end of statement while looking for matching double-quote")
            if peek == '"':
                ch = self.next()
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if peek == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if ch == self.escape:
                if self.raw_escapes:
                    out.append(ch)
                following = self.peek()
                if following == _EOF:
                    continue  # a trailing escape is dropped; the loop then reports the quote
                if following in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        chars: list[str] = []
        while (ch := self.peek()) != _EOF:
            if not chars and ch.isdecimal():
                while self.peek() != _EOF and self.peek().isdecimal():
                    chars.append(self.next())
                return "".join(chars)
            if not chars and ch in _SPECIAL_PARAMS:
                return self.next()
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            chars.append(self.next())
        return "".join(chars)

    def dollar(self) -> str:
        self.next()  # the "$"
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.lookup(name)
            if not found and self.skip_unset:
                return "$" + name
            return value
        self.next()  # the "{"
        peek = self.peek()
        if peek == _EOF:
            raise _Error("syntax error: missing '}'")
        if peek in "{}:":
            raise _Error("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            value, found = self.lookup(name)
            if not found and self.skip_unset:
                return "${" + name + "}"
            return value
        if ch == _EOF:
            raise _Error("syntax error: missing '}'")
        if ch == "/":
            return self._replace(name)
        modifier = ch
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = self.next()
            modifier += ch
        elif ch not in "+-?#%":
            raise _Error(f"unsupported modifier ({modifier}) in substitution")
        try:
            word, _ = self.stop_on("}", ch in "#%")
        except _Error:
            if self.peek() == _EOF:
                raise _Error("syntax error: missing '}'") from None
            raise
        value, found = self.lookup(name)
        if self.skip_unset and not found:
            return "${" + name + modifier + word + "}"
        unset = not found or (null_is_unset and value == "")
        if ch == "-":
            return word if unset else value
        if ch == "+":
            return "" if unset else word
        if ch == "?":
            if not found:
                raise _Error(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise _Error(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if ch in "#%":
            greedy = word.startswith(ch)
            if greedy:
                word = word[1:]
            if ch == "%":
                return _trim_suffix(word, value, greedy)
            return _trim_prefix(word, value, greedy)
        raise _Error(f"unsupported modifier ({modifier}) in substitution")

    def _replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.next()
        try:
            pattern, _ = self.stop_on("/", True)
        except _Error:
            if self.peek() == _EOF:
                raise _Error("syntax error: missing '/' in ${}") from None
            raise
        try:
            replacement, _ = self.stop_on("}", True)
        except _Error:
            if self.peek() == _EOF:
                raise _Error("syntax error: missing '}'") from None
            raise
        value, found = self.lookup(name)
        if self.skip_unset and not found:
            return "${" + f"{name}/{pattern}/{replacement}" + "}"
        regex = _shell_pattern(pattern, greedy=True, anchored=False)
        if replace_all:
            return regex.sub(lambda m: _go_template(replacement, m), value)
        match = regex.search(value)
        if match is None:
            return value
        return value[: match.start()] + replacement + value[match.end() :]


# -- shell patterns (the # % / modifiers) ------------------------------------------------------

_REGEX_SPECIAL = frozenset("[]{}.+()|^$")


def _shell_pattern(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """``*`` any string (shortest unless greedy), ``?`` one character, ``\\`` escapes ``*?\\``."""
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(star)
            continue
        if ch == "?":
            out.append(".")
            continue
        if ch == "\\":
            following = pattern[i : i + 1]
            if following in ("}", "/"):
                continue  # escaped only to get past the ${...} parser
            if following not in ("*", "?", "\\"):
                shown = following or ""
                raise _Error(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{shown}'")
            out.append("\\" + following)
            i += 1
            continue
        out.append("\\" + ch if ch in _REGEX_SPECIAL else ch)
    try:
        return re.compile("".join(out))
    except re.error as exc:  # pragma: no cover - every special character is escaped above
        raise _Error(f"invalid pattern ({pattern}) in substitution: {exc}") from None


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    match = _shell_pattern(pattern, greedy=greedy, anchored=True).search(value)
    return value[match.end() :] if match else value


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern keeping each ``\\x`` escape pair in order (``a\\*c`` -> ``c\\*a``)."""
    pieces: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i != len(pattern) - 1:
            pieces.append(pattern[i : i + 2])
            i += 2
        else:
            pieces.append(pattern[i])
            i += 1
    return "".join(reversed(pieces))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # The shortest rightmost match is the shortest leftmost match of the reversed strings.
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


_TEMPLATE_NAME = re.compile(r"\{(\w+)\}|(\w+)")


def _go_template(template: str, match: re.Match[str]) -> str:
    """Go's ``Regexp.ReplaceAllString`` template: ``$$``, ``$0``/``${0}``; other refs are empty."""
    out: list[str] = []
    i = 0
    while True:
        j = template.find("$", i)
        if j < 0:
            out.append(template[i:])
            return "".join(out)
        out.append(template[i:j])
        i = j + 1
        if template.startswith("$", i):
            out.append("$")
            i += 1
            continue
        ref = _TEMPLATE_NAME.match(template, i)
        if ref is None:
            out.append("$")
            continue
        i = ref.end()
        name = ref.group(1) or ref.group(2)
        if name.isdecimal() and int(name) == 0:
            out.append(match.group(0))


# -- public API --------------------------------------------------------------------------------


def _run(
    word: str,
    env: Mapping[str, str],
    *,
    escape: str,
    process_quotes: bool = True,
    raw_quotes: bool = False,
    raw_escapes: bool = False,
    skip_unset: bool = False,
) -> tuple[str, list[str]]:
    lexer = _Lexer(word, env, escape=escape, process_quotes=process_quotes,
                   raw_quotes=raw_quotes, raw_escapes=raw_escapes, skip_unset=skip_unset)
    try:
        return lexer.stop_on(_EOF, raw_escapes)
    except _Error as exc:
        raise DockerfileError(f"failed to process {json.dumps(word, ensure_ascii=False)}: {exc}") from None


def expand(
    word: str, env: Mapping[str, str], *, escape: str = "\\", process_quotes: bool = True
) -> str:
    """Expand variables and remove quotes and escapes in one word (BuildKit's ``ProcessWord``).

    ``process_quotes=False`` leaves quote characters alone (how BuildKit expands the content of
    an unquoted heredoc).  Raises :class:`~pydock.errors.DockerfileError` on a syntax error or a
    ``${X?msg}`` whose variable is unset; the message has no location (the caller adds it).
    """
    return _run(word, env, escape=escape, process_quotes=process_quotes)[0]


def split_words(word: str, env: Mapping[str, str], *, escape: str = "\\") -> list[str]:
    """Expand, then split on unquoted whitespace (BuildKit's ``ProcessWords``; used by EXPOSE)."""
    return _run(word, env, escape=escape)[1]


class _EverySet(Mapping[str, str]):
    """An environment in which every variable is set and non-empty (for syntax checks)."""

    def __getitem__(self, key: str) -> str:
        return "x"

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def check(word: str, *, escape: str = "\\") -> None:
    """Raise ``DockerfileError`` if ``word`` cannot expand whatever the variables' values."""
    _run(word, _EverySet(), escape=escape)


def parse_key_values(
    args: Sequence[str], env: Mapping[str, str], *, escape: str = "\\", instruction: str = "ENV"
) -> list[tuple[str, str]]:
    """Expanded ``(key, value)`` pairs of ENV or LABEL from the parser's flat key/value list.

    Every pair of one line sees ``env`` as it was before the line, as in Docker:
    ``ENV abc=bye def=$abc`` gives ``def`` the old ``abc``.
    """
    if not args:
        raise DockerfileError(f"{instruction} requires at least one argument")
    if len(args) % 2:
        raise DockerfileError(f"Bad input to {instruction}, too many arguments")
    pairs: list[tuple[str, str]] = []
    for raw_key, raw_value in zip(args[::2], args[1::2], strict=True):
        if not raw_key:
            raise DockerfileError(f"{instruction} names can not be blank")
        key = expand(raw_key, env, escape=escape)
        pairs.append((key, expand(raw_value, env, escape=escape)))
    return pairs


def split_arg(word: str) -> tuple[str, str | None]:
    """``NAME=default`` -> ``(NAME, default)``; ``NAME`` -> ``(NAME, None)``; unexpanded."""
    name, eq, default = word.partition("=")
    if eq and not name:
        raise DockerfileError("ARG names can not be blank")
    return name, (default if eq else None)


def parse_arg_values(
    args: Sequence[str], env: Mapping[str, str], *, escape: str = "\\"
) -> list[tuple[str, str | None]]:
    """Expanded ``(name, default or None)`` of one ARG line; each default sees the ARGs before it
    on the same line too (BuildKit expands and declares them one by one)."""
    if not args:
        raise DockerfileError("ARG requires at least one argument")
    scope = dict(env)
    out: list[tuple[str, str | None]] = []
    for word in args:
        raw_name, raw_default = split_arg(word)
        name = expand(raw_name, scope, escape=escape)
        default = None if raw_default is None else expand(raw_default, scope, escape=escape)
        if default is not None:
            scope[name] = default
        out.append((name, default))
    return out


# -- heredoc markers ---------------------------------------------------------------------------

_HEREDOC = re.compile(r"^(\d*)<<(-?)([^<]*)$")


@dataclass(frozen=True)
class HeredocMarker:
    """What a ``<<[-]NAME`` word says: the name, the fd, ``<<-`` (chomp tabs), quoted (no expand)."""

    name: str
    fd: int
    chomp: bool
    expand: bool


def parse_heredoc_marker(word: str) -> HeredocMarker | None:
    """The heredoc a word like ``<<EOF``, ``<<-"EOF"`` or ``3<<EOF`` opens, else ``None``."""
    match = _HEREDOC.match(word)
    if match is None or not match.group(3):
        return None
    rest = match.group(3)
    words = _run(rest, {}, escape="\\", skip_unset=True)[1]
    if len(words) != 1:
        return None
    raw = _run(rest, {}, escape="\\", skip_unset=True, raw_quotes=True)[1]
    quotes = words[0].count("'") + words[0].count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"') if raw else -1
    return HeredocMarker(name=words[0], fd=int(match.group(1) or 0), chomp=match.group(2) == "-",
                         expand=quotes == raw_quotes)


def heredoc_markers(line: str) -> list[HeredocMarker]:
    """The heredocs a shell-form line opens, in order (``RUN cat <<A <<-B``)."""
    try:
        words = _run(line, {}, escape="\\", raw_quotes=True, raw_escapes=True)[1]
    except DockerfileError:
        return []
    found = (parse_heredoc_marker(word) for word in words)
    return [marker for marker in found if marker is not None]


_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)


def chomp_heredoc(content: str) -> str:
    """Remove leading tabs from every line, as ``<<-`` asks."""
    return _LEADING_TABS.sub("", content)
