"""The host base image (``pydock:host``): the host's system directories and running Python as
a read-only view, copy-on-write per container, made without a registry and without a copy.

The image has two layers, neither of them a copy of host files:

- a host reference: ``layers/<short>`` is a symlink to ``../runtime/host/view``, where each
  container mounts a read-only view of the host's root filesystem in its own mount
  namespace (``backends/native/hostview.py``).  On the host that directory is empty;
- a mask above it, a small layer of overlayfs whiteouts and opaque directories that hides
  what is not system material: /root, /home, /tmp, /var, /run, /opt, /srv, /mnt, /media are
  empty directories (/var keeps an empty skeleton), every other top-level entry outside
  /usr, /etc and the /bin, /lib, /sbin links is gone, and so are /etc/shadow, /etc/gshadow,
  private ssh host keys and /etc/ssl/private.  The running interpreter's prefix
  (``sys.base_prefix``), when it lives in a hidden place (pyenv's /root/.pyenv/...), shows
  through a directory with an overlayfs redirect to the same host path; a virtual
  environment's site-packages stay hidden unless asked for (``venv=True``).

Writes in a container go to its own upper layer, never to the host.  The mask is computed
from the host (top-level names, the interpreter's prefix): ``host_image`` returns the
existing image while they are unchanged, and makes a new one (moving the tag) otherwise.
Neither layer can be exported (``docker save``, push, ``pydock export``): they are views.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import stat
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from ..backends.native.hostview import VIEW_LINK, host_dir
from ..errors import HostViewError, UsageError
from ..models import Image, ImageConfig, ImageRef
from ..spec import DEFAULT_PATH
from ..store import Store

__all__ = ["HOST_IMAGE", "HostView", "MaskEntry", "describe_host", "host_image", "is_host_ref",
           "resolve_base"]

HOST_IMAGE = "pydock:host"
LABEL_VIEW = "org.pydock.host-view"
LABEL_PYTHON = "org.pydock.python.version"
#: The diff_id of the host reference layer (no tar has it: the layer is a live view).
REFERENCE_ID = "sha256:" + hashlib.sha256(b"pydock host view of /\n").hexdigest()

# Top-level entries shown from the host as they are (/etc minus its secrets).
SYSTEM = frozenset({"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc"})
# Top-level directories a container gets empty (opaque), with these modes when the host
# has none of them.
EMPTY_DIRS = {"root": 0o700, "home": 0o755, "tmp": 0o1777, "var": 0o755, "run": 0o755,
              "srv": 0o755, "opt": 0o755, "mnt": 0o755, "media": 0o755, "proc": 0o555,
              "sys": 0o555, "dev": 0o755}
# What the empty /var and /run hold: (path, mode, symlink target).
SKELETON = (("var/cache", 0o755, ""), ("var/lib", 0o755, ""), ("var/local", 0o755, ""),
            ("var/log", 0o755, ""), ("var/mail", 0o755, ""), ("var/opt", 0o755, ""),
            ("var/spool", 0o755, ""), ("var/tmp", 0o1777, ""), ("var/run", 0o777, "/run"),
            ("var/lock", 0o777, "/run/lock"), ("run/lock", 0o1777, ""))
# Secrets under /etc a container never sees (whiteouts, whether or not the host has them).
ETC_HIDDEN = ("shadow", "shadow-", "gshadow", "gshadow-", "security/opasswd", "ssl/private",
              "docker/key.json", "krb5.keytab", "ssh/ssh_host_dsa_key",
              "ssh/ssh_host_ecdsa_key", "ssh/ssh_host_ed25519_key", "ssh/ssh_host_rsa_key")
REDIRECT_MAX = 256  # overlayfs' default redirect_max


@dataclass(frozen=True)
class MaskEntry:
    """One entry of the mask layer (``path`` relative to the root, parents listed first)."""

    path: str
    kind: Literal["dir", "whiteout", "symlink"]
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    opaque: bool = False      # hides what the layers below hold in this directory
    redirect: str = ""        # shows this host path (absolute) from the layers below
    target: str = ""          # a symlink's target


@dataclass(frozen=True)
class HostView:
    """What a host base image shows, computed from the host (``describe_host``)."""

    python_version: str
    prefix: str                       # the interpreter's installation (sys.base_prefix)
    exposed: tuple[str, ...]          # host directories shown inside hidden places
    path: str                         # the image's PATH
    mask: tuple[MaskEntry, ...]

    @property
    def mask_diff_id(self) -> str:
        """The mask layer's diff_id: a digest of its entries (no tar has it)."""
        doc = json.dumps([asdict(e) for e in self.mask], sort_keys=True).encode()
        return "sha256:" + hashlib.sha256(b"pydock host mask v1\n" + doc).hexdigest()

    @property
    def diff_ids(self) -> tuple[str, ...]:
        return (REFERENCE_ID, self.mask_diff_id)

    def config(self) -> ImageConfig:
        """The image config: PATH with the interpreter first, ``python3``, WorkingDir /."""
        return ImageConfig(
            env=(f"PATH={self.path}",),
            cmd=("python3",),
            working_dir="/",
            labels=((LABEL_PYTHON, self.python_version),
                    (LABEL_VIEW, f"read-only view of this host, python {self.python_version} "
                                 f"at {self.prefix}")),
        )

    def fill(self, layer: Path) -> None:
        """Write the mask into the empty directory ``layer`` (overlayfs format)."""
        for e in self.mask:
            path = layer / e.path
            if e.kind == "whiteout":
                os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
            elif e.kind == "symlink":
                os.symlink(e.target, path)
                os.lchown(path, e.uid, e.gid)
            else:
                path.mkdir()
                if e.opaque:
                    os.setxattr(path, "trusted.overlay.opaque", b"y")
                if e.redirect:
                    os.setxattr(path, "trusted.overlay.redirect", e.redirect.encode())
                os.chown(path, e.uid, e.gid)
                os.chmod(path, e.mode)


def is_host_ref(ref: str) -> bool:
    """Whether ``ref`` names the host base image (``pydock:host``)."""
    try:
        return str(ImageRef.parse(ref)) == HOST_IMAGE
    except UsageError:
        return False


def _interpreter(venv: bool) -> tuple[str, list[str], list[str]]:
    """(version, host dirs to show, bin dirs for PATH, first wins) of the running Python."""
    prefix = os.path.realpath(sys.base_prefix)
    exposed, bins = [prefix], []
    if venv and os.path.realpath(sys.prefix) != prefix:
        exposed.append(os.path.realpath(sys.prefix))
        bins.append(os.path.join(exposed[-1], "bin"))
    base_bin = os.path.join(prefix, "bin")
    if not os.access(os.path.join(base_bin, "python3"), os.X_OK):
        base_exe = os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable)
        base_bin = os.path.dirname(base_exe)
        if not os.access(os.path.join(base_bin, "python3"), os.X_OK):
            raise HostViewError(f"the running Python ({base_exe}) has no python3 next to it, "
                                f"nor in {prefix}/bin: the host image's CMD would not run")
    bins.append(base_bin)
    return platform.python_version(), exposed, bins


def _check_shown(path: str, root_dev: int) -> None:
    """``path`` and its parents must be on the root filesystem (the view crosses no mount)."""
    if path == "/" or not os.path.isabs(path):
        raise HostViewError(f"the host image cannot show {path!r}: not a directory below /")
    if len(path) > REDIRECT_MAX:
        raise HostViewError(f"the host image cannot show {path}: the path is longer than "
                            f"{REDIRECT_MAX} bytes (overlayfs redirect_max)")
    current = path
    while current != "/":
        try:
            st = os.stat(current)
        except OSError as exc:
            raise HostViewError(f"the host image cannot show {path}: {exc}") from None
        if st.st_dev != root_dev:
            raise HostViewError(
                f"the host image cannot show {path}: {current} is on another filesystem (a "
                "mount) than /, and the host view shows only the root filesystem")
        current = os.path.dirname(current)


def _redirects_followed() -> bool:
    try:
        with open("/sys/module/overlay/parameters/redirect_always_follow") as f:
            return f.read().strip() == "Y"
    except OSError:
        return True  # overlay built in without parameters: the default (follow) applies


def _dir_entry(rel: str, host: str, *, default_mode: int = 0o755, opaque: bool = False,
               redirect: str = "") -> MaskEntry:
    """A mask directory with the host directory's owner and mode (the mask's win)."""
    try:
        st = os.stat(host)
        mode, uid, gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        if not stat.S_ISDIR(st.st_mode):
            mode, uid, gid = default_mode, 0, 0
    except OSError:
        mode, uid, gid = default_mode, 0, 0
    return MaskEntry(rel, "dir", mode, uid, gid, opaque=opaque, redirect=redirect)


def describe_host(*, venv: bool = False, hide: Sequence[str] = ()) -> HostView:
    """Compute what the host image shows from this host and the running interpreter;
    ``hide``: host paths below the shown system directories to leave out (the store, if
    it lives there).

    Raises HostViewError when it cannot be shown (the interpreter on another filesystem,
    overlayfs redirects disabled, /usr or /etc mounted separately).
    """
    root_dev = os.stat("/").st_dev
    for system in ("/usr", "/etc"):
        if os.path.isdir(system) and os.stat(system).st_dev != root_dev:
            raise HostViewError(f"{system} is a separate mount: the host view shows only the "
                                "root filesystem")
    version, exposed, bins = _interpreter(venv)
    entries: dict[str, MaskEntry] = {}
    names = set(os.listdir("/"))
    hidden_exposed = [p for p in exposed if p.strip("/").split("/")[0] not in SYSTEM]
    for path in hidden_exposed:
        _check_shown(path, root_dev)
    if hidden_exposed and not _redirects_followed():
        raise HostViewError(
            f"the running Python lives in {hidden_exposed[0]}, which the host image shows "
            "through an overlayfs redirect, but this kernel does not follow redirects "
            "(overlay module parameter redirect_always_follow=N)")
    tops = {p.strip("/").split("/")[0] for p in hidden_exposed}
    for name in sorted(names | set(EMPTY_DIRS)):
        if name in SYSTEM:
            continue
        if name in EMPTY_DIRS or name in tops:
            entries[name] = _dir_entry(name, f"/{name}", default_mode=EMPTY_DIRS.get(name, 0o755),
                                       opaque=True)
        else:
            entries[name] = MaskEntry(name, "whiteout", 0)
    for rel, mode, target in SKELETON:
        entries[rel] = (MaskEntry(rel, "symlink", 0o777, target=target) if target else
                        MaskEntry(rel, "dir", mode))
    for rel in ETC_HIDDEN + tuple(sorted(_ssh_private_keys())):
        parent = os.path.dirname(f"etc/{rel}")
        if not os.path.isdir(f"/{parent}"):
            continue
        _add_parents(entries, parent)
        entries[f"etc/{rel}"] = MaskEntry(f"etc/{rel}", "whiteout", 0)
    for path in hidden_exposed:
        rel = path.strip("/")
        _add_parents(entries, os.path.dirname(rel))
        entries[rel] = _dir_entry(rel, path, redirect=path)
    for path in map(os.path.realpath, hide):
        rel = path.strip("/")
        if rel.split("/")[0] in SYSTEM and "/" in rel:
            _add_parents(entries, os.path.dirname(rel))
            entries[rel] = MaskEntry(rel, "whiteout", 0)
    search = list(dict.fromkeys([*bins, *DEFAULT_PATH.split(":")]))
    return HostView(python_version=version, prefix=exposed[0], exposed=tuple(hidden_exposed),
                    path=":".join(search), mask=tuple(entries[k] for k in sorted(entries)))


def _add_parents(entries: dict[str, MaskEntry], rel: str) -> None:
    """Mask directories for ``rel`` and its parents that are not there yet."""
    parts = rel.split("/") if rel else []
    for i in range(len(parts)):
        sub = "/".join(parts[: i + 1])
        if sub not in entries or entries[sub].kind != "dir":
            entries[sub] = _dir_entry(sub, f"/{sub}")


def _ssh_private_keys() -> list[str]:
    try:
        return [f"ssh/{n}" for n in os.listdir("/etc/ssh")
                if n.startswith("ssh_host_") and n.endswith("_key")]
    except OSError:
        return []


def _current(store: Store, ref: str, view: HostView) -> Image | None:
    """The image tagged ``ref`` if it is this host view as it is now."""
    image = store.lookup(ref)
    if image is None or image.diff_ids != view.diff_ids or \
            not all(store.has_layer(d) for d in view.diff_ids):
        return None
    if image.config.to_oci() != view.config().to_oci():
        return None
    return image


def host_image(store: Store, name: str = HOST_IMAGE, *, venv: bool = False) -> Image:
    """The host base image, tagged ``name``: made on first use, made again (the tag moves)
    when the host's Python or top-level directories changed, else returned as it is.

    Safe to call from many processes at once (pytest-xdist workers): they make it once,
    under the store's lock.  ``venv=True`` also shows the running virtual environment
    (``sys.prefix``) and puts its ``bin`` first in PATH.
    """
    ref = str(ImageRef.parse(name))
    view = describe_host(venv=venv, hide=[str(store.root)])
    found = _current(store, ref, view)
    if found is not None and (host_dir(store.root) / "view").is_dir():
        return found
    try:
        with store.lock():
            (host_dir(store.root) / "view").mkdir(parents=True, exist_ok=True)
            found = _current(store, ref, view)
            if found is not None:
                return found
            store.add_host_layer(REFERENCE_ID, link=VIEW_LINK)
            store.add_host_layer(view.mask_diff_id, fill=view.fill)
            image = store.create_image(view.config(), view.diff_ids,
                                       history_comment=f"pydock host view, python "
                                                       f"{view.python_version}")
            store.tag(image.id, ref)
    except OSError as exc:
        # not root: no whiteouts (mknod), no trusted.overlay xattrs
        hint = " (it needs root)" if exc.errno in (errno.EPERM, errno.EACCES) else ""
        raise HostViewError(f"cannot make the host base image {ref} in the store "
                            f"{store.root}: {exc.strerror or exc}{hint}") from None
    return store.image(image.id)


def resolve_base(store: Store, ref: str) -> Image:
    """A builder's base image lookup: ``pydock:host`` is made or refreshed here (see
    ``host_image``); any other reference must be in the store."""
    if is_host_ref(ref):
        return host_image(store)
    return store.image(ref)
