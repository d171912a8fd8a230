"""Shared fixtures: a private store per test, a busybox rootfs tarball, a CLI runner."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

BUSYBOX = shutil.which("busybox") or "/bin/busybox"

# Applets the test image links to busybox (a static binary, so no libraries are needed).
APPLETS = (
    "sh ls cat echo true false sleep env id ps touch rm mkdir hostname mount kill "
    "grep head tail wc sed awk printf test stat readlink ln chmod chown dd yes seq "
    "whoami uname nc httpd wget date tr cut sort find mv cp top free df"
).split()


def make_busybox_tar(path: Path) -> Path:
    """Write a minimal rootfs tarball: static busybox, applet links, /etc/passwd and group."""
    def add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = mode
        tar.addfile(info)

    def add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w") as tar:
        for d in ("bin", "etc", "tmp", "root", "home", "home/app", "var", "usr", "usr/bin"):
            add_dir(tar, d, 0o1777 if d == "tmp" else 0o755)
        with open(BUSYBOX, "rb") as f:
            add_file(tar, "bin/busybox", f.read(), 0o755)
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
        add_file(
            tar,
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\n"
            b"app:x:1000:1000:app:/home/app:/bin/sh\n"
            b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        add_file(
            tar,
            "etc/group",
            b"root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n",
        )
    return path


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox rootfs tarball (made once per session)."""
    if not os.path.exists(BUSYBOX):
        pytest.skip("busybox-static is not installed (apt-get install busybox-static)")
    return make_busybox_tar(tmp_path_factory.mktemp("rootfs") / "busybox.tar")


@pytest.fixture
def store_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, private store directory, also exported as PYDOCK_STORE for CLI runs."""
    root = tmp_path / "store"
    monkeypatch.setenv("PYDOCK_STORE", str(root))
    return root


def pydock_cli(*args: str, input: bytes | None = None, timeout: float = 60,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run the real ``pydock`` CLI (``python -m pydock``) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "pydock", *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        env=env,
    )
