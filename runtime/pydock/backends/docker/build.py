"""Builds on the Docker daemon's builder: the same Dockerfile, context, .dockerignore, build
args and target as the native builder, once per machine at a time (xdist workers share it)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ...errors import BuildError
from ...models import Image, ImageRef
from .client import api_errors

if TYPE_CHECKING:
    from .backend import DockerBackend

_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_CODE = re.compile(r"returned a non-zero code: (\d+)")


def build(backend: DockerBackend, context: str, *, dockerfile: str | None = None,
          target: str | None = None, build_args: Mapping[str, str] | None = None,
          tag: str | None = None, no_cache: bool = False) -> Image:
    """Build ``context`` (``dockerfile`` relative to it, default ``Dockerfile``) into an
    image of the daemon; BuildError names the Dockerfile, the failing step and its output.

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
    from filelock import FileLock
    with FileLock(os.path.join(tempfile.gettempdir(), f"pydock-docker-build-{key[:16]}.lock")):
        image_id = _run(backend, context, path, dockerfile, target, args, tag, no_cache)
    return backend.image(image_id)


def _run(backend: DockerBackend, context: str, path: str, dockerfile: str | None,
         target: str | None, args: dict[str, str], tag: str | None, no_cache: bool) -> str:
    log: list[str] = []
    step = ""
    image_id = None
    with api_errors(f"build {context}"):
        stream = backend.api.build(path=context, dockerfile=dockerfile, target=target,
                                   buildargs=args or None, tag=tag, nocache=no_cache, rm=True,
                                   forcerm=True, decode=True, use_config_proxy=False)
        for chunk in stream:
            text = chunk.get("stream") or ""
            for line in text.splitlines():
                m = _STEP.match(line)
                if m:
                    step = m.group(3)
                log.append(line)
            if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            if "error" in chunk:
                reason = str(chunk["error"]).strip()
                code = _CODE.search(reason)
                raise BuildError(reason, path=path, instruction=step or None,
                                 exit_code=int(code.group(1)) if code else None,
                                 output="\n".join(log[-20:]))
    if image_id is None:
        raise BuildError(f"the Docker daemon reported no image for {path}",
                         output="\n".join(log[-20:]))
    return str(image_id)
