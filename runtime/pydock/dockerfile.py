"""Parse a Dockerfile into frozen data (stages, instructions, global ARGs): no expansion, no I/O.

The text is split by the ``dockerfile`` package, which is BuildKit's own parser (continuations,
comments, parser directives, heredocs, JSON forms); this module checks what BuildKit's
``instructions`` package checks (instruction names, arguments, flags, stages) and the syntax of
every word that will be expanded later, so that a bad Dockerfile fails before anything is built.
Every error is a :class:`~pydock.errors.DockerfileError` naming ``path:line: INSTRUCTION``.

Expansion itself (which needs the build's ARG and ENV values) is :func:`expand_instruction`,
applied by the builder step by step; the word-level rules live in :mod:`pydock.expand`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import dockerfile as _parser

from . import expand as _expand
from .errors import DockerfileError

#: Every instruction a Dockerfile may use.
INSTRUCTIONS: frozenset[str] = frozenset(name.upper() for name in _parser.all_cmds())

_BOOL, _STRING, _LIST = "bool", "string", "list"

#: The flags each instruction accepts and their kinds: a bool flag may be given bare
#: (``--link``); a list flag may be repeated (``--mount``); any other flag at most once.
FLAGS: Mapping[str, Mapping[str, str]] = {
    "FROM": {"platform": _STRING},
    "RUN": {"mount": _LIST, "network": _STRING, "security": _STRING, "device": _LIST},
    "COPY": {"from": _STRING, "chown": _STRING, "chmod": _STRING, "link": _BOOL,
             "parents": _BOOL, "exclude": _LIST},
    "ADD": {"chown": _STRING, "chmod": _STRING, "link": _BOOL, "keep-git-dir": _BOOL,
            "checksum": _STRING, "exclude": _LIST, "unpack": _BOOL},
    "HEALTHCHECK": {"interval": _STRING, "timeout": _STRING, "start-period": _STRING,
                    "start-interval": _STRING, "retries": _STRING},
}

_STAGE_NAME = re.compile(r"[a-z][a-z0-9-_.]*")
_DIRECTIVE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*")
_DIRECTIVES = ("syntax", "escape", "check")
_NOT_TRIGGERS = ("ONBUILD", "FROM", "MAINTAINER")


@dataclass(frozen=True)
class Heredoc:
    """A here-document of RUN, COPY or ADD.

    ``content`` is as written (with ``<<-`` it still has its leading tabs: RUN hands it to the
    shell that way when it is not the whole script); ``data`` is what a file made from it holds.
    ``expand`` is false when the delimiter was quoted (``<<"EOF"``): no variable expansion.
    """

    name: str
    content: str
    fd: int = 0
    chomp: bool = False
    expand: bool = True

    @property
    def data(self) -> str:
        return _expand.chomp_heredoc(self.content) if self.chomp else self.content


@dataclass(frozen=True)
class Instruction:
    """One instruction: ``cmd`` upper-case, ``args`` as the parser split them (quotes kept for
    the words Docker expands), ``flags`` as ``(name, value)`` pairs in order (bool flags given bare
    read ``"true"``), ``json`` for the exec/JSON form, ``line``/``end_line`` in the file.

    ENV and LABEL args are flat ``key, value, key, value``; ARG args are ``NAME[=default]`` words;
    ONBUILD has the trigger's text as its one argument and the parsed trigger as ``trigger``.
    """

    cmd: str
    args: tuple[str, ...]
    flags: tuple[tuple[str, str], ...] = ()
    json: bool = False
    line: int = 0
    end_line: int = 0
    original: str = ""
    heredocs: tuple[Heredoc, ...] = ()
    trigger: Instruction | None = None

    def flag(self, name: str, default: str | None = None) -> str | None:
        """The value of ``--name`` (the last one if repeated), else ``default``."""
        values = self.flag_values(name)
        return values[-1] if values else default

    def flag_values(self, name: str) -> tuple[str, ...]:
        """Every value of a repeatable flag such as RUN's ``--mount``, in order."""
        return tuple(value for key, value in self.flags if key == name)

    def key_values(self) -> tuple[tuple[str, str], ...]:
        """ENV/LABEL pairs, unexpanded."""
        return tuple(zip(self.args[::2], self.args[1::2], strict=True))


@dataclass(frozen=True)
class ArgDecl:
    """``ARG name[=default]``; ``default`` unexpanded, ``None`` when there is none."""

    name: str
    default: str | None
    line: int


@dataclass(frozen=True)
class Stage:
    """A ``FROM`` and the instructions up to the next one.  ``name`` is lower-case (stage names
    are case-insensitive); ``base`` and ``platform`` are unexpanded (global ARGs apply)."""

    index: int
    name: str | None
    base: str
    platform: str | None
    instructions: tuple[Instruction, ...]
    line: int
    original: str = ""


@dataclass(frozen=True)
class Dockerfile:
    """A parsed Dockerfile: its stages, the ARGs before the first FROM, its parser directives."""

    path: str
    stages: tuple[Stage, ...]
    global_args: tuple[ArgDecl, ...] = ()
    escape: str = "\\"
    syntax: str | None = None
    directives: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def stage(self, ref: str | int) -> Stage:
        """A stage by name (case-insensitive) or index; ``KeyError`` when there is none."""
        if isinstance(ref, int):
            if 0 <= ref < len(self.stages):
                return self.stages[ref]
            raise KeyError(ref)
        for stage in self.stages:
            if stage.name is not None and stage.name == ref.lower():
                return stage
        raise KeyError(ref)


# -- errors ------------------------------------------------------------------------------------


class _Source:
    """The text split into lines, to point errors at the bad part."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line_text(self, line: int) -> str | None:
        return self.lines[line - 1] if 0 < line <= len(self.lines) else None

    def error(self, reason: str, line: int | None, instruction: str | None,
              token: str | None = None) -> DockerfileError:
        source = self.line_text(line) if line else None
        span = None
        if source is not None and token:
            start = source.find(token)
            if start >= 0:
                span = (start, start + len(token))
        return DockerfileError(reason, path=self.path, line=line, instruction=instruction,
                               source=source if span else None, span=span)


# -- parser directives -------------------------------------------------------------------------


def _directives(text: str) -> dict[str, str]:
    """``# syntax=``, ``# escape=``, ``# check=`` at the top, until the first other line."""
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines()):
        line = raw.removeprefix("\ufeff") if number == 0 else raw
        if not line.startswith("#"):
            break
        match = _DIRECTIVE.fullmatch(line[1:].lstrip())
        if match is None or match.group(1).lower() not in _DIRECTIVES:
            break
        found.setdefault(match.group(1).lower(), match.group(2))
    return found


# -- flags -------------------------------------------------------------------------------------


def _flags(cmd: str, raw: Sequence[str], src: _Source, line: int) -> tuple[tuple[str, str], ...]:
    """Parse ``--name[=value]`` the way BuildKit's BFlags does."""
    allowed = FLAGS.get(cmd, {})
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for text in raw:
        if text == "--":
            break
        if not text.startswith("--"):
            raise src.error(f"arg should start with -- : {text}", line, cmd, text)
        name, eq, value = text[2:].partition("=")
        kind = allowed.get(name)
        if kind is None:
            hint = ", ".join(f"--{known}" for known in allowed) or "none"
            raise src.error(f"unknown flag: --{name} (accepted: {hint})", line, cmd, text)
        if name in seen and kind != _LIST:
            raise src.error(f"duplicate flag specified: --{name}", line, cmd, text)
        seen.add(name)
        if kind == _BOOL:
            if eq and not value:
                raise src.error(f"missing a value on flag: --{name}", line, cmd, text)
            if value.lower() not in ("", "true", "false"):
                raise src.error(f"expecting boolean value for flag --{name}, not: {value}",
                                line, cmd, text)
            value = "false" if value.lower() == "false" else "true"
        elif not eq:
            raise src.error(f"missing a value on flag: --{name}", line, cmd, text)
        out.append((name, value))
    return tuple(out)


# -- durations (HEALTHCHECK) -------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d*)(?:\.(\d*))?([a-zµμ]*)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9,
            "m": 60 * 10**9, "h": 3600 * 10**9}


def parse_duration(text: str) -> int:
    """Nanoseconds of a Go duration (``1m30s``, ``1.5h``, ``300ms``, ``0``); ``ValueError`` if bad."""
    body = text[1:] if text[:1] in "+-" else text
    sign = -1 if text.startswith("-") else 1
    if body == "0":
        return 0
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    total, pos = 0, 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        whole, frac, unit = match.group(1), match.group(2), match.group(3)  # type: ignore[union-attr]
        if not whole and not frac:
            raise ValueError(f"invalid duration {text!r}")
        if not unit:
            raise ValueError(f"missing unit in duration {text!r}")
        if unit not in _UNIT_NS:
            raise ValueError(f"unknown unit {unit!r} in duration {text!r}")
        scale = _UNIT_NS[unit]
        total += int(whole or 0) * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        pos = match.end()  # type: ignore[union-attr]
    return sign * total


# -- per-instruction checks (BuildKit's instructions/parse.go) ---------------------------------


def _exactly_one(ins: Instruction, src: _Source) -> None:
    if len(ins.args) != 1 or not ins.args[0]:
        raise src.error(f"{ins.cmd} requires exactly one argument", ins.line, ins.cmd)


def _at_least_one(ins: Instruction, src: _Source) -> None:
    if not ins.args:
        raise src.error(f"{ins.cmd} requires at least one argument", ins.line, ins.cmd)


def _check_pairs(ins: Instruction, src: _Source) -> None:
    _at_least_one(ins, src)
    for key, _value in ins.key_values():
        if not key:
            raise src.error(f"{ins.cmd} names can not be blank", ins.line, ins.cmd)


def _check_arg(ins: Instruction, src: _Source) -> None:
    _at_least_one(ins, src)
    for word in ins.args:
        if word.startswith("="):
            raise src.error("ARG names can not be blank", ins.line, ins.cmd, word)


def _check_copy(ins: Instruction, src: _Source) -> None:
    if len(ins.args) < 2:
        raise src.error(f"{ins.cmd} requires at least two arguments, but only one was provided. "
                        "Destination could not be determined", ins.line, ins.cmd)
    if _expand.parse_heredoc_marker(ins.args[-1]) is not None:
        raise src.error(f"{ins.cmd} cannot accept a heredoc as a destination", ins.line, ins.cmd,
                        ins.args[-1])


def _check_shell(ins: Instruction, src: _Source) -> None:
    if not ins.json:
        raise src.error('SHELL requires the arguments to be in JSON form, e.g. '
                        'SHELL ["/bin/sh", "-c"]', ins.line, ins.cmd)
    _at_least_one(ins, src)


def _check_volume(ins: Instruction, src: _Source) -> None:
    _at_least_one(ins, src)
    if any(not arg.strip() for arg in ins.args):
        raise src.error("VOLUME specified can not be an empty string", ins.line, ins.cmd)


def _check_healthcheck(ins: Instruction, src: _Source) -> None:
    _at_least_one(ins, src)
    kind = ins.args[0].upper()
    if kind == "NONE":
        if len(ins.args) > 1:
            raise src.error("HEALTHCHECK NONE takes no arguments", ins.line, ins.cmd)
        return
    if kind != "CMD":
        raise src.error(f'Unknown type "{ins.args[0]}" in HEALTHCHECK (try CMD)', ins.line,
                        ins.cmd, ins.args[0])
    if len(ins.args) < 2 or (not ins.json and not ins.args[1]):
        raise src.error("Missing command after HEALTHCHECK CMD", ins.line, ins.cmd)
    for name, value in ins.flags:
        if name == "retries":
            if not re.fullmatch(r"[+-]?\d+", value):
                raise src.error(f"--retries must be a whole number, not {value!r}", ins.line,
                                ins.cmd, value)
            if int(value) < 1:
                raise src.error(f"--retries must be at least 1 (not {int(value)})", ins.line,
                                ins.cmd, value)
            continue
        if not value:
            continue
        try:
            nanoseconds = parse_duration(value)
        except ValueError as exc:
            raise src.error(f"--{name}: {exc}", ins.line, ins.cmd, value) from None
        if nanoseconds != 0 and nanoseconds < 1_000_000:
            raise src.error(f"Interval {name!r} cannot be less than 1ms", ins.line, ins.cmd,
                            value)


_CHECKS = {
    "ENV": _check_pairs,
    "LABEL": _check_pairs,
    "ARG": _check_arg,
    "ADD": _check_copy,
    "COPY": _check_copy,
    "EXPOSE": _at_least_one,
    "MAINTAINER": _exactly_one,
    "ONBUILD": _at_least_one,
    "SHELL": _check_shell,
    "STOPSIGNAL": _exactly_one,
    "USER": _exactly_one,
    "VOLUME": _check_volume,
    "WORKDIR": _exactly_one,
    "HEALTHCHECK": _check_healthcheck,
}


def _expanded_words(ins: Instruction) -> list[str]:
    """The words of ``ins`` that Docker will expand (checked for syntax now)."""
    if ins.cmd not in _expand.EXPANDED_ARGS:
        words: list[str] = []
    elif ins.cmd == "ARG":
        words = [part for word in ins.args for part in word.split("=", 1)]
    elif ins.cmd in ("ADD", "COPY"):
        words = [arg for arg in ins.args if _expand.parse_heredoc_marker(arg) is None]
    else:
        words = list(ins.args)
    expanded_flags = _expand.EXPANDED_FLAGS.get(ins.cmd, frozenset())
    return words + [value for name, value in ins.flags if name in expanded_flags]


def _check_instruction(ins: Instruction, src: _Source, escape: str) -> None:
    check = _CHECKS.get(ins.cmd)
    if check is not None:
        check(ins, src)
    for word in _expanded_words(ins):
        try:
            _expand.check(word, escape=escape)
        except DockerfileError as exc:
            raise src.error(exc.reason, ins.line, ins.cmd, word) from None


# -- building the model ------------------------------------------------------------------------


def _heredocs(command: _parser.Command) -> tuple[Heredoc, ...]:
    if not command.heredocs:
        return ()
    first_line = command.original.split("\n", 1)[0]
    markers = _expand.heredoc_markers(first_line)
    out = []
    for index, doc in enumerate(command.heredocs):
        marker = markers[index] if index < len(markers) else None
        if marker is not None and marker.name != doc.name:
            marker = None
        out.append(Heredoc(name=doc.name, content=doc.content, fd=doc.file_descriptor,
                           chomp=marker.chomp if marker else False,
                           expand=marker.expand if marker else True))
    return tuple(out)


def _instruction(command: _parser.Command, src: _Source, escape: str) -> Instruction:
    cmd = command.cmd.upper()
    line = command.start_line
    if cmd not in INSTRUCTIONS:
        raise src.error(_unknown(command.cmd), line, command.cmd, command.cmd)
    if cmd == "ONBUILD":
        return _onbuild(command, src, escape)
    ins = Instruction(
        cmd=cmd,
        args=tuple(command.value),
        flags=_flags(cmd, command.flags, src, line),
        json=command.json,
        line=line,
        end_line=command.end_line,
        original=command.original,
        heredocs=_heredocs(command),
    )
    _check_instruction(ins, src, escape)
    return ins


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name.upper(), sorted(INSTRUCTIONS), n=1, cutoff=0.6)
    return "unknown instruction" + (f" (did you mean {close[0]}?)" if close else "")


def _onbuild(command: _parser.Command, src: _Source, escape: str) -> Instruction:
    """ONBUILD: BuildKit checks only the trigger's keyword here; the rest is checked when the
    trigger runs in a child build, so a trigger that does not parse leaves ``trigger`` None."""
    line = command.start_line
    if not command.sub_cmd:
        raise src.error("ONBUILD requires at least one argument", line, "ONBUILD")
    sub = command.sub_cmd.upper()
    if sub == "ONBUILD":
        raise src.error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", line, "ONBUILD",
                        command.sub_cmd)
    if sub in _NOT_TRIGGERS:
        raise src.error(f"{sub} isn't allowed as an ONBUILD trigger", line, "ONBUILD",
                        command.sub_cmd)
    first = re.sub(r"(?i)^\s*ONBUILD\s*", "", command.original.split("\n", 1)[0])
    # A heredoc's lines, which the parser drops from ONBUILD's original.
    body = src.lines[line : command.end_line] if _expand.heredoc_markers(first) else []
    expression = "\n".join([first, *body]) if body else first
    try:
        trigger: Instruction | None = parse_trigger(expression, escape=escape, path=src.path,
                                                    line=line)
    except DockerfileError:
        trigger = None
    return Instruction(cmd="ONBUILD", args=(expression,), line=line, end_line=command.end_line,
                       original=command.original, trigger=trigger)


def parse_trigger(
    expression: str, *, escape: str = "\\", path: str = "Dockerfile", line: int = 1
) -> Instruction:
    """Parse and check an ONBUILD trigger (``"COPY . /app"``), as a child build runs it.

    Errors read ``<path>:<line>: ONBUILD <INSTRUCTION>: ...``: in a child build, ``path`` and
    ``line`` are best the child's Dockerfile and its FROM line.
    """
    src = _Source(path, "\n" * (line - 1) + expression)
    keyword = expression.split(None, 1)[0].upper() if expression.strip() else ""
    where = f"ONBUILD {keyword}".rstrip()
    if keyword in _NOT_TRIGGERS:
        raise src.error(f"{keyword} isn't allowed as an ONBUILD trigger", line, where)
    prefix = f"# escape={escape}\n" if escape != "\\" else ""
    try:
        (parsed,) = _parser.parse_string(prefix + expression + ("\n" if "\n" in expression else ""))
    except (_parser.GoParseError, ValueError) as exc:
        raise src.error(f"bad ONBUILD trigger: {exc}", line, where) from None
    parsed = parsed._replace(start_line=line, end_line=line + expression.count("\n"))
    try:
        trigger = _instruction(parsed, src, escape)
    except DockerfileError as exc:
        raise DockerfileError(exc.reason, path=exc.path, line=exc.line, instruction=where,
                              source=exc.source, span=exc.span) from None
    return replace(trigger, original=expression)


def _from(command: _parser.Command, src: _Source, escape: str, index: int) -> Stage:
    line = command.start_line
    args = command.value
    name: str | None = None
    if len(args) == 3 and args[1].lower() == "as":
        name = args[2].lower()
        if not _STAGE_NAME.fullmatch(name):
            raise src.error(f"invalid name for build stage: {args[2]!r}, name can't start with "
                            "a number or contain symbols", line, "FROM", args[2])
    elif len(args) != 1:
        raise src.error("FROM requires either one or three arguments (FROM image [AS name])",
                        line, "FROM", args[1] if len(args) > 1 else None)
    flags = _flags("FROM", command.flags, src, line)
    platform = dict(flags).get("platform")
    for word in (args[0], platform):
        if word is not None:
            try:
                _expand.check(word, escape=escape)
            except DockerfileError as exc:
                raise src.error(exc.reason, line, "FROM", word) from None
    return Stage(index=index, name=name, base=args[0], platform=platform, instructions=(),
                 line=line, original=command.original)


def _locate(text: str, message: str) -> int | None:
    """The line at which the parser first reports ``message``: the shortest failing prefix."""
    lines = text.splitlines(keepends=True)
    for count in range(1, len(lines) + 1):
        try:
            _parser.parse_string("".join(lines[:count]))
        except _parser.GoParseError as exc:
            if str(exc) == message:
                return count
        except ValueError:
            return None
    return None


def _instruction_at(src: _Source, line: int, escape: str) -> tuple[int, str | None]:
    """The first line and keyword of the instruction continued onto physical line ``line``."""
    start = line
    while start > 1:
        previous = (src.line_text(start - 1) or "").rstrip()
        if previous.lstrip().startswith("#") or not previous.endswith(escape):
            break
        start -= 1
    words = (src.line_text(start) or "").split()
    keyword = words[0].upper() if words and not words[0].startswith("#") else None
    return start, keyword


def parse(text: str, *, path: str = "Dockerfile") -> Dockerfile:
    """Parse and check ``text``; raises ``DockerfileError`` at the first problem."""
    src = _Source(path, text)
    directives = _directives(text)
    escape = directives.get("escape", "\\")
    try:
        commands = _parser.parse_string(text)
    except _parser.GoParseError as exc:
        message = str(exc)
        if message == "file with no instructions":
            raise DockerfileError("the Dockerfile has no instructions (it needs at least a FROM)",
                                  path=path) from None
        line, instruction = _locate(text, message), None
        if line is not None:
            line, instruction = _instruction_at(src, line, escape)
        raise src.error(message, line, instruction) from None
    except ValueError as exc:  # e.g. a NUL character, which the Go side cannot take
        raise DockerfileError(f"cannot parse: {exc}", path=path) from None

    global_args: list[ArgDecl] = []
    stages: list[Stage] = []
    current: list[Instruction] = []
    names: dict[str, int] = {}

    def close_stage() -> None:
        if stages:
            stages[-1] = replace(stages[-1], instructions=tuple(current))

    for command in commands:
        cmd = command.cmd.upper()
        if cmd == "FROM":
            close_stage()
            current = []
            stage = _from(command, src, escape, len(stages))
            if stage.name is not None:
                if stage.name in names:
                    raise src.error(f"duplicate stage name {stage.name!r} (first used on line "
                                    f"{names[stage.name]})", stage.line, "FROM",
                                    command.value[2])
                names[stage.name] = stage.line
            stages.append(stage)
            continue
        if not stages and cmd != "ARG" and cmd in INSTRUCTIONS:
            raise src.error("no build stage in current context: a Dockerfile must start "
                            "with FROM (only ARG may come before it)", command.start_line, cmd,
                            command.cmd)
        ins = _instruction(command, src, escape)
        if not stages:
            global_args.extend(arg_decls(ins))
            continue
        _check_copy_from(ins, len(stages) - 1, src)
        current.append(ins)
    close_stage()
    if not stages:
        raise DockerfileError("the Dockerfile has no FROM: nothing to build", path=path,
                              line=global_args[-1].line if global_args else None)
    return Dockerfile(path=path, stages=tuple(stages), global_args=tuple(global_args),
                      escape=escape, syntax=directives.get("syntax"), directives=directives)


def _check_copy_from(ins: Instruction, stage_index: int, src: _Source) -> None:
    """``COPY --from=N`` must name an earlier stage (a name may also be an image: not checked)."""
    value = ins.flag("from") if ins.cmd == "COPY" else None
    if value is not None and value.isdecimal() and int(value) >= stage_index:
        raise src.error(f"invalid from flag value {value}: refers to current or future build "
                        "stage", ins.line, ins.cmd, f"--from={value}")


def arg_decls(ins: Instruction) -> tuple[ArgDecl, ...]:
    """The declarations of one ARG instruction, unexpanded."""
    return tuple(ArgDecl(name, default, ins.line)
                 for name, default in (_expand.split_arg(word) for word in ins.args))


# -- expansion of one instruction --------------------------------------------------------------


def expand_instruction(
    ins: Instruction, env: Mapping[str, str], *, escape: str = "\\", path: str = "Dockerfile"
) -> Instruction:
    """``ins`` with Docker's variable expansion applied where Docker applies it.

    ``env`` is what the instruction sees: the stage's ARGs and ENV before it.  ENV and LABEL
    pairs of one line all see ``env`` as it was before the line; ARG defaults see the ARGs before
    them on the line too; EXPOSE's words are split after expansion; COPY/ADD heredoc markers are
    kept and unquoted heredocs get their content expanded (quotes kept); RUN, CMD, ENTRYPOINT,
    SHELL, HEALTHCHECK and ONBUILD come back unchanged.  Raises ``DockerfileError`` located at
    the instruction.
    """
    try:
        return _expanded(ins, env, escape)
    except DockerfileError as exc:
        raise exc.located(path=path, line=ins.line, instruction=ins.cmd) from None


def _expanded(ins: Instruction, env: Mapping[str, str], escape: str) -> Instruction:
    cmd = ins.cmd
    expanded_flags = _expand.EXPANDED_FLAGS.get(cmd, frozenset())
    flags = tuple((name, _expand.expand(value, env, escape=escape) if name in expanded_flags
                   else value) for name, value in ins.flags)
    if cmd not in _expand.EXPANDED_ARGS:
        return replace(ins, flags=flags)
    args: tuple[str, ...]
    heredocs = ins.heredocs
    if cmd in ("ENV", "LABEL"):
        pairs = _expand.parse_key_values(ins.args, env, escape=escape, instruction=cmd)
        args = tuple(part for pair in pairs for part in pair)
    elif cmd == "ARG":
        args = tuple(name if default is None else f"{name}={default}"
                     for name, default in _expand.parse_arg_values(ins.args, env, escape=escape))
    elif cmd == "EXPOSE":
        args = tuple(word for arg in ins.args
                     for word in _expand.split_words(arg, env, escape=escape))
    elif cmd in ("ADD", "COPY"):
        args = tuple(arg if _expand.parse_heredoc_marker(arg) is not None
                     else _expand.expand(arg, env, escape=escape) for arg in ins.args)
        heredocs = tuple(
            replace(doc, content=_expand.expand(doc.content, env, escape=escape,
                                                process_quotes=False))
            if doc.expand else doc
            for doc in ins.heredocs
        )
    else:
        args = tuple(_expand.expand(arg, env, escape=escape) for arg in ins.args)
    return replace(ins, args=args, flags=flags, heredocs=heredocs)
