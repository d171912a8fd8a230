"""Builds on the Docker daemon's builder: the same Dockerfile, context, .dockerignore, build
args and target as the native builder, once per machine at a time (xdist workers share it)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ... import dockerfile as df
from ...errors import BuildError, PydockError
from ...expand import expand
from ...models import Image, ImageRef
from .client import api_errors
from .hostimage import HOST_IMAGE, is_host_ref

if TYPE_CHECKING:
    from .backend import DockerBackend

_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_CODE = re.compile(r"returned a non-zero code: (\d+)")
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
_NOISE = (" ---> ", "Removing intermediate container ")  # the builder's own lines


def build(backend: DockerBackend, context: str, *, dockerfile: str | None = None,
          target: str | None = None, build_args: Mapping[str, str] | None = None,
          tag: str | None = None, no_cache: bool = False,
          progress: Callable[[int, int, str], None] | None = None) -> Image:
    """Build ``context`` (``dockerfile`` relative to it, default ``Dockerfile``) into an
    image of the daemon; BuildError names the Dockerfile, the failing step and its output.
    ``progress(number, total, text)`` hears of each step as the daemon starts it.

    Workers building the same thing at once take turns (a file lock): the first builds,
    the others find every step in the daemon's build cache."""
    if tag is not None:
        ImageRef.parse(tag)
    if not os.path.isdir(context):
        raise BuildError(f"build context {context} is not a directory")
    path = os.path.join(context, dockerfile or "Dockerfile")
    if not os.path.isfile(path):
        raise BuildError(f"no Dockerfile at {path}")
    args = dict(build_args or {})
    key = hashlib.sha256(json.dumps([os.path.abspath(context), dockerfile, target,
                                     sorted(args.items()), tag]).encode()).hexdigest()
    dfile = _parse(path)
    if dfile is not None and _uses_host_image(dfile, args):
        backend.image(HOST_IMAGE)  # made from this host when the daemon lacks it
    from filelock import FileLock
    with FileLock(os.path.join(tempfile.gettempdir(), f"pydock-docker-build-{key[:16]}.lock")):
        image_id = _run(backend, context, path, dockerfile, target, args, tag, no_cache,
                        _step_lines(dfile), progress)
    return backend.image(image_id)


def _parse(path: str) -> df.Dockerfile | None:
    """The Dockerfile as pydock's parser reads it; None when it cannot (the daemon's builder
    then reports the problem in its own words)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return df.parse(f.read(), path=path)
    except (OSError, PydockError):
        return None


def _uses_host_image(dfile: df.Dockerfile, args: Mapping[str, str]) -> bool:
    """Whether a stage is ``FROM pydock:host`` or copies ``--from`` it (after the global
    ARGs' expansion, as the builder does)."""
    values: dict[str, str] = {}
    refs: list[str] = []
    try:
        for decl in dfile.global_args:
            if decl.name in args:
                values[decl.name] = args[decl.name]
            elif decl.default is not None:
                values[decl.name] = expand(decl.default, values, escape=dfile.escape)
        for stage in dfile.stages:
            refs.append(expand(stage.base, values, escape=dfile.escape))
            refs += [ins.flag("from") or "" for ins in stage.instructions if ins.cmd == "COPY"]
    except PydockError:
        return False
    return any(is_host_ref(ref) for ref in refs if ref)


def _step_lines(dfile: df.Dockerfile | None) -> list[tuple[str, int]]:
    """(instruction, line) of the classic builder's steps in order: the ARGs before the first
    FROM, then each stage's FROM and instructions (its "Step N/M" counts these)."""
    if dfile is None:
        return []
    steps = [("ARG", line) for line in dict.fromkeys(d.line for d in dfile.global_args)]
    for stage in dfile.stages:
        steps.append(("FROM", stage.line))
        steps += [(ins.cmd.upper(), ins.line) for ins in stage.instructions]
    return steps


def _run(backend: DockerBackend, context: str, path: str, dockerfile: str | None,
         target: str | None, args: dict[str, str], tag: str | None, no_cache: bool,
         steps: list[tuple[str, int]],
         progress: Callable[[int, int, str], None] | None) -> str:
    log: list[str] = []
    step = ""
    step_line: int | None = None
    image_id = None
    with api_errors(f"build {context}"):
        stream = backend.api.build(path=context, dockerfile=dockerfile, target=target,
                                   buildargs=args or None, tag=tag, nocache=no_cache, rm=True,
                                   forcerm=True, decode=True, use_config_proxy=False)
        for chunk in stream:
            text = _COLOUR.sub("", chunk.get("stream") or "")  # stderr comes in red
            for line in text.splitlines():
                m = _STEP.match(line)
                if m:
                    step, step_line = _located(m, steps)
                    log.clear()  # the output of the current step only
                    if progress is not None:
                        progress(int(m.group(1)), int(m.group(2)), m.group(3))
                elif (line or log) and not line.startswith(_NOISE):
                    log.append(line)
            if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            if "error" in chunk:
                reason = str(chunk["error"]).strip()
                code = _CODE.search(reason)
                raise BuildError(reason, path=path, line=step_line, instruction=step or None,
                                 exit_code=int(code.group(1)) if code else None,
                                 output="\n".join(log[-20:]))
    if image_id is None:
        raise BuildError(f"the Docker daemon reported no image for {path}",
                         output="\n".join(log[-20:]))
    return str(image_id)


def _located(m: re.Match[str], steps: list[tuple[str, int]]) -> tuple[str, int | None]:
    """A "Step N/M : TEXT" line as the native builder names a step: (the instruction, its
    Dockerfile line) when pydock's parse agrees with the daemon's count, else (TEXT, None)."""
    number, total, text = int(m.group(1)), int(m.group(2)), m.group(3)
    word = text.split(None, 1)[0].upper() if text.strip() else ""
    if total <= len(steps) and 0 < number <= len(steps) and steps[number - 1][0] == word:
        return word, steps[number - 1][1]
    return text, None
