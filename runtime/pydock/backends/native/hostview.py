"""The host view: the host's root filesystem as a read-only overlay lower layer (pydock:host).

A host base image (``sources/host.py``) has a layer ``layers/<short>`` that is a symlink to
``../runtime/host/view``: on the host an empty directory, so nothing in the store points at
the host's files.  A container of such an image mounts, in its own private mount namespace
and before its root overlay, a small tmpfs on ``runtime/host`` and in it a read-only overlay
``lowerdir=/:<empty dir>`` on ``view``; the layer's symlink then resolves to that view.

Why the extra overlay: the store's other layers are directories below ``/`` on the same
filesystem, and overlayfs refuses a lower layer below another one ("overlapping lowerdir
path", ELOOP).  Through the read-only overlay, ``/`` is another filesystem.  Like any
overlay layer it does not cross mounts (no /proc, /dev, /sys or other mounts of the host),
and it dies with the mount namespace.  Where ``/`` is itself an overlay (a container of
Docker), a read-only bind mount of ``/`` is used instead (overlays stack two deep at most).
"""

from __future__ import annotations

import os

from . import syscalls as sc

TYPE_CHECKING = False  # the zygote factory imports this module: no typing, no pathlib
if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

#: Where a host reference layer's symlink points, relative to ``<store>/layers``.
VIEW_LINK = "../runtime/host/view"


def host_dir(store_root: Path) -> Path:
    """``<store>/runtime/host``: the mount point of a container's host view (holds ``view/``)."""
    return store_root / "runtime" / "host"


def is_host_reference(path: str | os.PathLike[str]) -> bool:
    """Whether the layer directory ``path`` is a host reference (a symlink, never a copy)."""
    return os.path.islink(path)


_root_is_overlay: list[bool] = []


def root_is_overlay() -> bool:
    """Whether ``/`` is an overlayfs (the host view then binds it instead)."""
    if not _root_is_overlay:
        _root_is_overlay.append(_find_root_overlay())
    return _root_is_overlay[0]


def _find_root_overlay() -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if fields[4] == "/":
                    fstype = fields[fields.index("-") + 1]
                    if fstype == "overlay":
                        return True
    except (OSError, ValueError, IndexError):
        return False
    return False


def plan_host_view(store_root: Path, layer_names: Iterable[str]) -> tuple[bytes, bool] | None:
    """(``runtime/host`` dir, bind instead of overlay) when a layer is a host reference."""
    layers = store_root / "layers"
    if not any(is_host_reference(layers / name) for name in layer_names):
        return None
    return bytes(host_dir(store_root)), root_is_overlay()


def mount_host_view(where: bytes, bind: bool) -> None:
    """Child side, in a private mount namespace: mount the host view at ``where/view``."""
    view = where + b"/view"
    if bind:
        sc.mount(b"/", view, None, sc.MS_BIND)
        sc.mount(None, view, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NODEV)
        return
    sc.mount(b"pydock-host", where, b"tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
             b"mode=755,size=16k")
    os.mkdir(where + b"/lower", 0o755)
    os.mkdir(view, 0o755)
    sc.mount(b"pydock-host", view, b"overlay", sc.MS_RDONLY | sc.MS_NODEV,
             b"lowerdir=/:" + where + b"/lower")
