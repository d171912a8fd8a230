"""``pydock:host`` on the docker backend: a slim copy of this host's Python, busybox and
libraries, imported into a real Docker daemon once per host state and once across processes.

The ``pydock:host`` image itself stays in the daemon (the examples' docker runs reuse it while
the host is unchanged); the copies made under test names are removed."""

from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
import sys
from typing import Any

import pytest
from dockerhelp import docker_raw

__all__ = ["docker_raw"]  # fixtures used here

MAKE = """
import sys
from pydock import DockerBackend
from pydock.backends.docker.hostimage import host_image
print(host_image(DockerBackend(session_label=None), sys.argv[1]).id)
"""


@pytest.fixture
def docker(docker_raw: Any):  # type: ignore[no-untyped-def]
    from pydock import DockerBackend

    b = DockerBackend(docker_raw)
    yield b
    b.close()


def run(docker: Any, image: str, *argv: str, **kw: Any) -> tuple[int, str, str]:
    c = docker.run(image, command=list(argv), **kw)
    try:
        status = c.wait(60).exit_code
        out, err = c.logs()
    finally:
        c.remove(force=True)
    return status, out.decode(), err.decode()


def test_the_host_python_runs_in_the_daemon(docker: Any) -> None:
    from pydock.backends.docker.hostfiles import LABEL_KEY
    from pydock.backends.docker.hostimage import host_state

    image = docker.image("pydock:host")
    assert image.config.cmd == ("python3",)
    assert dict(image.config.labels)[LABEL_KEY] == host_state()[2]
    assert image.size < 120_000_000  # no tests, no site-packages, no libpython.a
    probe = ("import sys, ssl, sqlite3, ctypes, zlib, lzma, bz2, json, hashlib, threading, "
             "socket, pwd, os; ctx = ssl.create_default_context(); "
             "t = threading.Thread(target=print); t.start(); t.join(); "
             "print(json.dumps([sys.version, sys.prefix, ctx.cert_store_stats()['x509_ca'] > 0,"
             " pwd.getpwuid(os.getuid()).pw_name, "
             "os.listdir(sys.prefix + '/lib/python3.%d/site-packages' % sys.version_info[1]),"
             " os.path.exists(sys.prefix + '/lib/python3.%d/test' % sys.version_info[1])]))")
    status, out, err = run(docker, "pydock:host", "python3", "-c", probe)
    assert status == 0, err
    version, prefix, certs, user, site, tests = json.loads(out.splitlines()[-1])
    assert (version, prefix) == (sys.version, os.path.realpath(sys.base_prefix))
    assert certs == os.path.exists("/etc/ssl/certs/ca-certificates.crt")
    assert (user, site, tests) == ("root", [], False)
    # busybox gives the shell and the tools; the interpreter's bytecode is valid as copied
    status, out, err = run(docker, "pydock:host", "sh", "-c",
                           "wget --help 2>&1 | head -c 7; echo; ls /tmp; "
                           "python3 -c 'import http.server, email, asyncio'")
    assert (status, out) == (0, "BusyBox\n"), err
    c = docker.run("pydock:host", command=["python3", "-c", "import http.server, asyncio"])
    try:
        assert c.wait(60).exit_code == 0
        assert docker.api.diff(c.id) is None  # nothing compiled, nothing written
    finally:
        c.remove(force=True)


def test_made_once_across_processes_and_again_only_when_the_host_changes(
        docker: Any, docker_raw: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydock.backends.docker import hostfiles
    from pydock.backends.docker.hostimage import host_image, host_state

    name = f"pydock-test/host:s{os.getpid()}-{secrets.token_hex(3)}"
    made: list[str] = []
    try:
        procs = [subprocess.Popen([sys.executable, "-c", MAKE, name], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        ids = []
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
            ids.append(out.strip())
        made.append(ids[0])
        assert ids[0] == ids[1]  # one import: another one would have another id
        assert host_image(docker, name).id == ids[0]  # unchanged host: the same image

        monkeypatch.setattr(hostfiles, "FORMAT", hostfiles.FORMAT + "-changed")
        host_state.cache_clear()
        again = host_image(docker, name)
        made.append(again.id)
        assert again.id != ids[0] and name in again.tags
        assert docker_raw.images(all=True, filters={"reference": name})[0]["Id"] == again.id
        assert not [i for i in docker_raw.images(all=True) if i["Id"] == ids[0]]  # replaced
    finally:
        host_state.cache_clear()
        for image_id in made:
            try:
                docker_raw.remove_image(image_id, force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass


def test_a_dockerfile_from_pydock_host_builds_on_the_daemon(docker: Any, tmp_path) -> None:
    (tmp_path / "app.py").write_text("import platform; print('app on', platform.python_version())\n")
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE=pydock:host\nFROM $BASE\nWORKDIR /app\nCOPY app.py .\n"
        "RUN python3 -c 'import app' > /built\nCMD [\"python3\", \"/app/app.py\"]\n")
    tag = f"pydock-test/from-host:s{os.getpid()}"
    image = docker.build(tmp_path, tag=tag)
    try:
        status, out, _ = run(docker, image.id)
        assert (status, out) == (0, f"app on {platform.python_version()}\n")
        assert run(docker, image.id, "cat", "/built")[1] == out
    finally:
        docker.remove_image(tag)


def test_host_references_are_recognised() -> None:
    from pydock.backends.docker.hostimage import is_host_ref

    assert is_host_ref("pydock:host") and is_host_ref("docker.io/library/pydock:host")
    assert not is_host_ref("pydock:hosts") and not is_host_ref("other/pydock:host")
    assert not is_host_ref("Not A Ref")
