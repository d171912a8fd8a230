"""What the docker backend's ``pydock:host`` holds: this host's running Python (interpreter,
stdlib without tests and site-packages, lib-dynload), every shared library they load, static
busybox with its applet links, a minimal /etc; and the content key that says when to remake it.

Files keep their host paths, and so do the symlinks on the way to them (``/lib -> usr/lib`` on
a merged-/usr host), so the interpreter finds its prefix and the loader its libraries as on the
host.  Nothing here talks to the daemon (``hostimage.py`` does)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from ...errors import HostViewError
from ...models import ImageConfig
from ...spec import DEFAULT_PATH

FORMAT = "pydock-docker-host/1"  # bump when what goes into the image changes
LABEL_KEY = "org.pydock.host-key"
LABEL_VIEW = "org.pydock.host-view"
LABEL_PYTHON = "org.pydock.python.version"

# Left out of the stdlib: tests, GUI and bootstrap material, build files (a 44 MB libpython.a).
STDLIB_SKIP = frozenset({"test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo",
                         "ensurepip", "site-packages", "dist-packages", "__phello__"})
DYNLOAD_SKIP = ("_test", "_xxtest", "xxlimited", "_tkinter", "_ctypes_test")
# Libraries that are loaded with dlopen, not listed as needed (pthread_cancel's unwinder).
DLOPENED = ("libgcc_s.so.1",)
ETC_FILES = {
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n"
                  b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": b"root:x:0:\nnogroup:x:65534:\n",
    "etc/nsswitch.conf": b"passwd: files\ngroup: files\nhosts: files dns\n",
}
EMPTY_DIRS = {"root": 0o700, "tmp": 0o1777, "home": 0o755, "var": 0o755, "var/tmp": 0o1777,
              "run": 0o755, "proc": 0o555, "sys": 0o555, "dev": 0o755, "etc": 0o755}
MAX_LINKS = 40  # symlinks followed for one path (the kernel's limit)


@dataclass(frozen=True)
class Entry:
    """One member of the image's root filesystem (``path`` relative, no leading slash)."""

    path: str
    kind: Literal["dir", "file", "symlink"]
    mode: int = 0o755
    source: str = ""      # a file's host path
    target: str = ""      # a symlink's target
    data: bytes | None = None  # a file made here rather than copied
    mtime: int = 0        # 0: the time the image is made
    strip: bool = False   # an ELF file whose symbols can go (``strip --strip-unneeded``)


@dataclass(frozen=True)
class Interpreter:
    """The running Python as the image needs it."""

    version: str
    executable: str   # resolved
    prefix: str       # sys.base_prefix, resolved
    stdlib: str
    dynload: str
    libpython: str    # "" when linked statically

    @classmethod
    def running(cls) -> Interpreter:
        exe = os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable)
        if not os.access(exe, os.X_OK):
            raise HostViewError(f"the running Python ({exe}) is not an executable file")
        stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
        dynload = os.path.realpath(sysconfig.get_config_var("DESTSHARED")
                                   or os.path.join(stdlib, "lib-dynload"))
        soname = sysconfig.get_config_var("INSTSONAME") or ""
        lib = os.path.join(sysconfig.get_config_var("LIBDIR") or "", soname)
        shared = ".so" in soname and os.path.isfile(lib)  # else a static libpython.a
        return cls(version=platform.python_version(), executable=exe,
                   prefix=os.path.realpath(sys.base_prefix), stdlib=stdlib, dynload=dynload,
                   libpython=os.path.realpath(lib) if shared else "")

    @property
    def bin_dir(self) -> str:
        return os.path.dirname(self.executable)


def busybox_path() -> str:
    """The host's busybox (resolved); HostViewError when there is none."""
    found = shutil.which("busybox") or "/bin/busybox"
    if not os.path.isfile(found):
        raise HostViewError("pydock:host on the docker backend needs busybox on this host "
                            "for its shell and tools (apt-get install busybox-static)")
    return os.path.realpath(found)


def _stat_key(path: str) -> list[object]:
    try:
        st = os.stat(path)
    except OSError:
        return [path, None]
    return [path, st.st_size, st.st_mtime_ns]


def content_key(py: Interpreter, busybox: str) -> str:
    """sha256 over what decides the image's content: the format, the interpreter (version,
    paths, stat of its binaries and directories), the C library, busybox's digest, the CA
    bundle.  Cheap (no directory walk): computed on every use of ``pydock:host``."""
    with open(busybox, "rb") as f:
        busybox_digest = hashlib.file_digest(f, "sha256").hexdigest()
    doc = [FORMAT, sys.version, platform.machine(), os.confstr("CS_GNU_LIBC_VERSION")
           if "CS_GNU_LIBC_VERSION" in os.confstr_names else "",
           py.prefix, _stat_key(py.executable), _stat_key(py.libpython), _stat_key(py.stdlib),
           _stat_key(py.dynload), busybox, busybox_digest,
           _stat_key("/etc/ssl/certs/ca-certificates.crt")]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


def image_config(py: Interpreter, key: str) -> ImageConfig:
    """The config of the native ``pydock:host`` (PATH with the interpreter first, ``python3``,
    WorkingDir /), with the content key as a label."""
    search = list(dict.fromkeys([py.bin_dir, os.path.join(py.prefix, "bin"),
                                 *DEFAULT_PATH.split(":")]))
    return ImageConfig(
        env=(f"PATH={':'.join(search)}",),
        cmd=("python3",),
        working_dir="/",
        labels=((LABEL_PYTHON, py.version),
                (LABEL_VIEW, f"slim copy of this host's python {py.version} at {py.prefix}, "
                             "with busybox"),
                (LABEL_KEY, key)))


class Tree:
    """Entries by path, parents first; host paths are added with the symlinks on their way."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def put(self, entry: Entry) -> None:
        self.entries.setdefault(entry.path, entry)

    def add_host(self, path: str, _links: int = 0) -> str:
        """Add host ``path`` (absolute), its parents and the symlinks met on the way (each
        followed); returns the resolved path.  A missing path raises HostViewError."""
        if _links > MAX_LINKS:
            raise HostViewError(f"pydock:host: too many symlinks resolving {path}")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        current = ""
        for i, name in enumerate(parts):
            if name == "..":
                current = os.path.dirname(current) if current != "/" else ""
                continue
            host = f"{current}/{name}"
            try:
                st = os.lstat(host)
            except OSError as exc:
                raise HostViewError(f"pydock:host: cannot read {host}: {exc.strerror}") from None
            rel = host[1:]
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(host)
                self.put(Entry(rel, "symlink", 0o777, target=target, mtime=int(st.st_mtime)))
                base = target if target.startswith("/") else f"{current}/{target}"
                rest = "/".join(parts[i + 1:])
                return self.add_host(f"{base}/{rest}" if rest else base, _links + 1)
            if stat.S_ISDIR(st.st_mode):
                self.put(Entry(rel, "dir", stat.S_IMODE(st.st_mode), mtime=int(st.st_mtime)))
            elif stat.S_ISREG(st.st_mode):
                self.put(Entry(rel, "file", stat.S_IMODE(st.st_mode), source=host,
                               mtime=int(st.st_mtime)))
            current = host
        return current or "/"

    def add_tree(self, root: str, *, skip_dirs: frozenset[str] = frozenset(),
                 keep_file: Iterable[str] | None = None) -> None:
        """Add the real directory ``root`` and what it holds, leaving out directories named
        in ``skip_dirs`` (kept empty at the top) and, in ``__pycache__``, all but the plain
        bytecode of this interpreter (no ``.opt-1``/``.opt-2``)."""
        self.add_host(root)
        tag = f".{sys.implementation.cache_tag}.pyc"
        for dirpath, dirs, files in os.walk(root):
            for d in list(dirs):
                if d in skip_dirs:
                    dirs.remove(d)
            for name in sorted(dirs):
                host = os.path.join(dirpath, name)
                st = os.lstat(host)
                if stat.S_ISLNK(st.st_mode):
                    self.put(Entry(host[1:], "symlink", 0o777, target=os.readlink(host)))
                else:
                    self.put(Entry(host[1:], "dir", stat.S_IMODE(st.st_mode),
                                   mtime=int(st.st_mtime)))
            in_cache = os.path.basename(dirpath) == "__pycache__"
            for name in sorted(files):
                if in_cache and not name.endswith(tag) or name.endswith((".pyo", ".exe")):
                    continue
                host = os.path.join(dirpath, name)
                st = os.lstat(host)
                if stat.S_ISLNK(st.st_mode):
                    self.put(Entry(host[1:], "symlink", 0o777, target=os.readlink(host)))
                elif stat.S_ISREG(st.st_mode):
                    self.put(Entry(host[1:], "file", stat.S_IMODE(st.st_mode), source=host,
                                   mtime=int(st.st_mtime)))


def shared_libraries(binaries: list[str]) -> list[str]:
    """Every library ``binaries`` load (the dynamic loader included), as ``ldd`` resolves
    them on this host: one ``ldd`` run for all of them."""
    ldd = shutil.which("ldd")
    if ldd is None:
        raise HostViewError("pydock:host on the docker backend needs ldd on this host to find "
                            "the libraries of the Python interpreter (package libc-bin)")
    out = subprocess.run([ldd, *binaries], capture_output=True, text=True,
                         env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "")}).stdout
    found: dict[str, None] = {}
    for line in out.splitlines():
        if not line.startswith("\t"):
            continue  # "file:" headers, "not a dynamic executable"
        line = line.strip()
        name, arrow, rest = line.partition(" => ")
        path = (rest if arrow else name).split(" (", 1)[0].strip()
        if path.startswith("/"):
            found[path] = None
    return list(found)


def plan(py: Interpreter, busybox: str) -> Tree:
    """The image's file tree (see the module docstring)."""
    tree = Tree()
    for rel, mode in EMPTY_DIRS.items():
        tree.put(Entry(rel, "dir", mode))
    tree.add_host(py.executable)
    for name in ("python3", "python"):
        link = os.path.join(py.bin_dir, name)
        if os.path.exists(link):
            tree.add_host(link)
        else:
            tree.put(Entry(link[1:], "symlink", 0o777, target=os.path.basename(py.executable)))
    build_dir = os.path.realpath(sysconfig.get_config_var("LIBPL") or "/")  # Makefile, .a
    skip = {os.path.basename(build_dir)} if os.path.dirname(build_dir) == py.stdlib else set()
    tree.add_tree(py.stdlib, skip_dirs=STDLIB_SKIP | skip)
    site = sysconfig.get_paths()["purelib"]
    if site.startswith(py.stdlib + "/"):
        tree.put(Entry(site[1:], "dir", 0o755))  # empty: the image has no third-party packages
    binaries = [py.executable, busybox]
    if py.dynload.startswith(py.stdlib + "/") or py.dynload == py.stdlib:
        for name in sorted(os.listdir(py.dynload)):
            path = os.path.join(py.dynload, name)
            if name.startswith(DYNLOAD_SKIP):
                tree.entries.pop(path[1:], None)
            elif name.endswith(".so"):
                binaries.append(path)
    else:
        tree.add_tree(py.dynload)
        binaries += [os.path.join(py.dynload, n) for n in os.listdir(py.dynload)
                     if n.endswith(".so")]
    for path in binaries:  # the interpreter's own binaries often carry debug symbols
        if path.startswith(py.prefix + "/") and path[1:] in tree.entries:
            tree.entries[path[1:]] = replace(tree.entries[path[1:]], strip=True)
    libs = shared_libraries(binaries)
    for lib in libs:
        real = tree.add_host(lib)
        if real.startswith(py.prefix + "/"):  # libpython
            tree.entries[real[1:]] = replace(tree.entries[real[1:]], strip=True)
    lib_dirs = {os.path.dirname(os.path.realpath(lib)) for lib in libs}
    for name in DLOPENED:
        for d in sorted(lib_dirs):
            if os.path.exists(os.path.join(d, name)):
                tree.add_host(os.path.join(d, name))
                break
    real_busybox = tree.add_host(busybox)
    for applet in _applets(busybox):
        host = f"/{applet}"
        resolved = _resolve_parent(tree, host)
        if resolved[1:] not in tree.entries:
            tree.put(Entry(resolved[1:], "symlink", 0o777, target=real_busybox))
    for rel, data in ETC_FILES.items():
        tree.put(Entry(rel, "file", 0o644, data=data))
    _add_certificates(tree)
    return tree


def _applets(busybox: str) -> list[str]:
    """Where busybox installs its applets (``bin/sh``, ``usr/bin/wget`` ...)."""
    out = subprocess.run([busybox, "--list-full"], capture_output=True, text=True).stdout
    return [line.strip().lstrip("/") for line in out.splitlines()
            if line.strip() and os.path.basename(line.strip()) not in ("busybox", "linuxrc")]


def _resolve_parent(tree: Tree, path: str) -> str:
    """``path`` with its parent directory added and resolved as on the host (a parent the
    host lacks is made as a plain directory)."""
    parent = os.path.dirname(path)
    if os.path.exists(parent):
        parent = tree.add_host(parent)
    else:
        parts = parent.strip("/").split("/")
        for i in range(len(parts)):
            tree.put(Entry("/".join(parts[: i + 1]), "dir", 0o755))
    return os.path.join(parent, os.path.basename(path))


def _add_certificates(tree: Tree) -> None:
    """The CA bundle where Python's ssl looks for it (the OpenSSL defaults), if the host has
    one."""
    import ssl
    paths = ssl.get_default_verify_paths()
    for path in (paths.cafile, paths.openssl_cafile, paths.openssl_capath,
                 os.path.join(os.path.dirname(paths.openssl_cafile or "/"), "openssl.cnf")):
        if path and os.path.exists(path):
            tree.add_host(path)
