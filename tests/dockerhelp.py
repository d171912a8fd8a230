"""Fixtures for tests against a real Docker daemon: a client, and the busybox rootfs imported
into it under a name of this test process (``pydock-test/busybox:s<pid>-<random>``), removed
after; and ``run``, a pytest session of the plugin on either backend (``BOTH``)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_root, require_service

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


def session_leftovers(api: Any, image: str | None = None) -> list[str]:
    """Containers labelled by a pydock session whose process is gone (a leak); only those
    of ``image`` and its descendants, when given (under xdist, another worker's test may
    have killed its session on purpose a moment ago)."""
    from pydock.procs import proc_start_time

    out = []
    filters: dict[str, Any] = {"label": ["pydock=1", "pydock.session"]}
    if image is not None:
        filters["ancestor"] = image
    for c in api.containers(all=True, filters=filters):
        pid, _, start = c["Labels"]["pydock.session"].partition(":")
        if not pid.isdigit() or str(proc_start_time(int(pid))) != start:
            out.append(f"{c['Id'][:12]} {c['Names']} {c['Labels']}")
    return out


# Backend-independent behaviour runs against both engines (docker: a real daemon).
BOTH = pytest.mark.parametrize("pd_backend", ["native", "docker"])


@pytest.fixture
def pd_backend() -> str:
    """The engine of the pytester runs (tests marked BOTH run with each)."""
    return "native"


@pytest.fixture
def run(pytester: pytest.Pytester, store_dir, pd_backend, request):  # type: ignore[no-untyped-def]
    """Run pytest on the given test files against the busybox image of the chosen backend
    (docker: the tests' "busybox" is that image's name there); returns the result.  A
    docker session must leave none of its containers or networks."""
    if pd_backend == "native":
        needs_root()
        request.getfixturevalue("busybox_image")
        image, options = "busybox", [f"--pydock-store={store_dir}"]
    else:
        image, options = request.getfixturevalue("docker_busybox"), ["--pydock-backend=docker"]

    def go(*args: str, **files: str) -> pytest.RunResult:
        pytester.makepyfile(**{k: v.replace('"busybox"', f'"{image}"') for k, v in files.items()})
        result = pytester.runpytest_subprocess(*options, "-p", "no:cacheprovider",
                                               *args, timeout=120)
        if pd_backend == "docker":
            assert session_leftovers(request.getfixturevalue("docker_raw"), image) == []
        return result
    return go
