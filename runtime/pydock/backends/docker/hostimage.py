"""``pydock:host`` in a Docker daemon: the slim copy of this host's Python (``hostfiles.py``)
streamed into the daemon as an image import, made once per host state (a content-key label)
and once across processes (a file lock)."""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, cast

from ...errors import HostViewError, ImageNotFound, UsageError
from ...models import Image, ImageRef
from .client import api_errors
from .hostfiles import (
    LABEL_KEY,
    Entry,
    Interpreter,
    Tree,
    busybox_path,
    content_key,
    image_config,
    plan,
)
from .options import config_changes

if TYPE_CHECKING:
    from .backend import DockerBackend

HOST_IMAGE = "pydock:host"
CHUNK = 1 << 20
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
         "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def is_host_ref(ref: str) -> bool:
    """Whether ``ref`` names the host base image (``pydock:host``, also fully qualified)."""
    try:
        return str(ImageRef.parse(ref)) == HOST_IMAGE
    except UsageError:
        return False


@functools.cache
def host_state() -> tuple[Interpreter, str, str]:
    """(the running interpreter, busybox's path, the content key), once per process."""
    if sys.platform != "linux":
        raise HostViewError("pydock:host copies this host's Python into the Docker daemon: "
                            f"it needs a Linux host (this one is {sys.platform})")
    py = Interpreter.running()
    busybox = busybox_path()
    return py, busybox, content_key(py, busybox)


def host_image(backend: DockerBackend, name: str = HOST_IMAGE) -> Image:
    """The host base image in the daemon, tagged ``name``: returned as it is while its
    ``org.pydock.host-key`` label matches this host, else made (again) from the host and the
    tag moved; xdist workers and parallel sessions asking at once make it once."""
    py, busybox, key = host_state()
    found = _current(backend, name, key)
    if found is not None:
        return found
    from filelock import FileLock
    with FileLock(os.path.join(tempfile.gettempdir(), "pydock-docker-host.lock")):
        found = _current(backend, name, key)
        if found is not None:
            return found
        _check_arch(backend)
        old = _image_id(backend, name)
        tree = plan(py, busybox)
        changes = config_changes(image_config(py, key))
        backend.import_stream(tar_stream(tree), changes=changes,
                              comment=f"pydock host image {key}", ref=name)
        if old is not None:
            try:  # the previous host image, unless containers or images still use it
                backend.api.remove_image(old)
            except Exception:  # noqa: BLE001 - in use: the daemon keeps it, untagged
                pass
    found = _current(backend, name, key)
    if found is None:
        raise HostViewError(f"the Docker daemon did not keep the host image {name}")
    return found


def _current(backend: DockerBackend, name: str, key: str) -> Image | None:
    from .backend import image_of
    doc = _inspect(backend, name)
    if doc is None or ((doc.get("Config") or {}).get("Labels") or {}).get(LABEL_KEY) != key:
        return None
    return image_of(doc)


def _inspect(backend: DockerBackend, name: str) -> dict[str, Any] | None:
    try:
        with api_errors(f"image {name}", image=name):
            return dict(backend.api.inspect_image(name))
    except ImageNotFound:
        return None


def _image_id(backend: DockerBackend, name: str) -> str | None:
    doc = _inspect(backend, name)
    return None if doc is None else str(doc["Id"])


def _check_arch(backend: DockerBackend) -> None:
    """The daemon must run this host's binaries (a remote daemon may be another machine)."""
    with api_errors("version"):
        arch = str(backend.api.version().get("Arch") or "")
    mine = _ARCH.get(platform.machine(), platform.machine())
    if arch and arch != mine:
        raise HostViewError(f"pydock:host copies this host's {mine} Python, but the Docker "
                            f"daemon at {backend.endpoint.base_url} runs {arch}")


class _Sink:
    """A write-only file object that hands out what was written so far."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.size += len(data)
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        return data


def tar_stream(tree: Tree) -> Iterator[bytes]:
    """The tree as an uncompressed tar, in chunks of about a MiB (owners root, modes and
    mtimes of the host: bytecode stays valid); ELF files marked ``strip`` lose their symbol
    tables on the way when ``strip`` is installed."""
    sink = _Sink()
    strip = shutil.which("strip")
    with tempfile.TemporaryDirectory(prefix="pydock-host-") as tmp, \
            tarfile.open(fileobj=cast(IO[bytes], sink), mode="w|",
                         format=tarfile.PAX_FORMAT) as tar:
        for entry in tree.entries.values():
            _add(tar, entry, strip, tmp)
            if sink.size >= CHUNK:
                yield sink.take()
    yield sink.take()


def _add(tar: tarfile.TarFile, e: Entry, strip: str | None, tmp: str) -> None:
    info = tarfile.TarInfo(e.path)
    info.mode, info.mtime = e.mode, e.mtime or int(time.time())
    if e.kind == "dir":
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif e.kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, e.target
        tar.addfile(info)
    elif e.data is not None:
        import io
        info.size = len(e.data)
        tar.addfile(info, io.BytesIO(e.data))
    else:
        source = e.source
        if e.strip and strip is not None:
            out = os.path.join(tmp, "stripped")
            if subprocess.run([strip, "--strip-unneeded", "-o", out, source],
                              capture_output=True).returncode == 0:
                source = out
        try:
            with open(source, "rb") as f:
                info.size = os.fstat(f.fileno()).st_size
                tar.addfile(info, f)
        except OSError as exc:
            raise HostViewError(f"pydock:host: cannot read {e.source}: {exc.strerror}") from None
