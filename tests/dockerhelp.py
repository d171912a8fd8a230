"""Fixtures for tests against a real Docker daemon: a client, and the busybox rootfs imported
into it under a name of this test process (``pydock-test/busybox:s<pid>-<random>``), removed
after."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_service

try:  # now, before pytester's sys.modules snapshots: a module first imported during a
    import docker  # noqa: F401  pytester test is dropped after it, and a later import
except ImportError:  # makes requests' classes clash ("You can only merge into CookieJar")
    pass


def docker_api() -> Any:
    """A raw ``docker.APIClient`` (for checks behind the backend's back), or None."""
    try:
        from pydock import DockerBackend, EngineUnavailable
    except ImportError:
        return None
    try:
        return DockerBackend(session_label=None).api
    except (EngineUnavailable, ImportError):
        return None


@pytest.fixture(scope="session")
def docker_raw() -> Any:
    api = docker_api()
    require_service(api is not None, "a Docker daemon (docker version)")
    return api


@pytest.fixture(scope="session")
def docker_busybox(docker_raw: Any, busybox_tar: Path) -> Iterator[str]:
    """The busybox rootfs as a Docker image (CMD sh) named for this process."""
    from pydock import DockerBackend, ImageConfig

    ref = f"pydock-test/busybox:s{os.getpid()}-{secrets.token_hex(3)}"  # one per module
    b = DockerBackend(docker_raw, session_label=None)
    with open(busybox_tar, "rb") as f:
        b.import_tar(f, config=ImageConfig(cmd=("sh",)), ref=ref)
    yield ref
    for c in docker_raw.containers(all=True, filters={"ancestor": ref}):
        docker_raw.remove_container(c["Id"], force=True)
    docker_raw.remove_image(ref)


def session_leftovers(api: Any) -> list[str]:
    """Containers labelled by a pydock session whose process is gone (a leak)."""
    from pydock.backends.native.monitor import proc_start_time

    out = []
    for c in api.containers(all=True, filters={"label": ["pydock=1", "pydock.session"]}):
        pid, _, start = c["Labels"]["pydock.session"].partition(":")
        if not pid.isdigit() or str(proc_start_time(int(pid))) != start:
            out.append(f"{c['Id'][:12]} {c['Names']} {c['Labels']}")
    return out
