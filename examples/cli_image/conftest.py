"""Fixtures of the CLI-image example: a busybox image made from the host's static busybox."""

from __future__ import annotations

import io
import shutil
import tarfile

import pytest


def busybox_rootfs() -> bytes:
    """A root filesystem tarball: static busybox, its applet links, a web root."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("needs a static busybox: apt-get install busybox-static")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "etc", "tmp", "www"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, "bin/busybox")
        for applet in ("sh", "cat", "echo", "ls", "wc", "tr", "sort", "httpd", "wget", "sed",
                       "grep", "sleep", "mkdir", "id", "env", "base64", "sha256sum"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"
                                          "www:x:33:33:www:/www:/bin/sh\n"),
                           ("etc/group", "root:x:0:\nwww:x:33:\n"),
                           ("www/index.html", "hello from the image\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf.getvalue()


@pytest.fixture(scope="session")
def tools_image(pydock):
    """The image under test, imported once per session (every xdist worker gets the same)."""
    return pydock.import_image(io.BytesIO(busybox_rootfs()), "example/tools:1",
                               changes=['CMD ["sh"]', "WORKDIR /tmp", "ENV LANG=C.UTF-8"])
