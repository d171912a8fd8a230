"""``RUN --mount``: cache (a directory kept in the store between builds), bind (read-only, from
the context) and tmpfs mounts, as BuildKit spells them; their mount points stay out of the layer."""

from __future__ import annotations

import hashlib
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from ..models import Mount


class MountError(Exception):
    """A ``--mount`` value is wrong or asks for what the builder does not do."""


@dataclass(frozen=True)
class RunMount:
    kind: str               # cache | bind | tmpfs
    target: str
    source: str = ""        # bind: a path in the context
    cache_id: str = ""
    readonly: bool = False
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


_KEYS = {"type", "target", "dst", "destination", "source", "src", "id", "sharing", "mode",
         "uid", "gid", "ro", "readonly", "rw", "readwrite", "from", "size", "required"}


def parse(text: str, *, workdir: str) -> RunMount:
    """One ``--mount`` value (``type=cache,target=/root/.cache``)."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if key not in _KEYS:
            raise MountError(f"unknown key {key!r} in --mount={text}")
        fields[key] = value if sep else "true"
    kind = fields.get("type", "bind")
    target = fields.get("target") or fields.get("dst") or fields.get("destination")
    if not target:
        raise MountError(f"--mount={text}: a target is needed")
    target = posixpath.normpath(posixpath.join(workdir or "/", target))
    readonly = any(fields.get(k) == "true" for k in ("ro", "readonly"))
    if kind == "cache":
        def number(key: str, default: str, base: int = 10) -> int:
            try:
                return int(fields.get(key, default), base)
            except ValueError:
                raise MountError(f"--mount={text}: {key} must be a number") from None
        return RunMount("cache", target, cache_id=fields.get("id") or target,
                        readonly=readonly, mode=number("mode", "755", 8),
                        uid=number("uid", "0"), gid=number("gid", "0"))
    if kind == "bind":
        if "from" in fields:
            raise MountError(f"--mount={text}: bind mounts from a stage or image are not "
                             "supported yet (only from the context)")
        if any(fields.get(k) == "true" for k in ("rw", "readwrite")):
            raise MountError(f"--mount={text}: read-write bind mounts are not supported (the "
                             "context is never written)")
        return RunMount("bind", target, source=fields.get("source") or fields.get("src") or ".",
                        readonly=True)
    if kind == "tmpfs":
        return RunMount("tmpfs", target)
    raise MountError(f"--mount={text}: type={kind} is not supported (cache, bind or tmpfs)")


def cache_dir(cache_root: Path, mount: RunMount) -> Path:
    """The host directory of a cache mount (made on first use, owned as asked)."""
    path = cache_root / "mounts" / hashlib.sha256(mount.cache_id.encode()).hexdigest()[:24]
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, mount.uid, mount.gid)
        path.chmod(mount.mode)
    return path


def to_mount(mount: RunMount, *, cache_root: Path, context_root: Path) -> Mount:
    """The engine's Mount for a RUN container."""
    if mount.kind == "cache":
        return Mount(target=mount.target, source=str(cache_dir(cache_root, mount)),
                     readonly=mount.readonly)
    if mount.kind == "bind":
        source = os.path.normpath(os.path.join(context_root, mount.source.lstrip("/")))
        if source != str(context_root) and not source.startswith(f"{context_root}/"):
            raise MountError(f"--mount source {mount.source!r} is outside the build context")
        if not os.path.exists(source):
            raise MountError(f"--mount source {mount.source!r} not found in the build context")
        return Mount(target=mount.target, source=source, readonly=True)
    return Mount(target=mount.target, kind="tmpfs")
