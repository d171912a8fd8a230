"""The examples a user copies stay green: run their test suites as the main job does."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

from conftest import needs_root

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_cli_image_example_passes(tmp_path) -> None:
    needs_root()
    r = subprocess.run([sys.executable, "-m", "pytest", str(EXAMPLES / "cli_image"), "-q",
                        "-p", "no:cacheprovider", f"--pydock-store={tmp_path / 'store'}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 passed" in r.stdout


def test_web_app_and_service_examples_pass_with_two_workers(tmp_path) -> None:
    """The Dockerfile examples (FROM pydock:host), as the main job runs them, on 2 xdist
    workers: each image built once, a fresh container (pair) per test."""
    needs_root()
    r = subprocess.run([sys.executable, "-m", "pytest", str(EXAMPLES / "webapp"),
                        str(EXAMPLES / "service_db"), "-q", "-n", "2", "-p", "no:cacheprovider",
                        f"--pydock-store={tmp_path / 'store'}"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "17 passed" in r.stdout


def test_web_app_and_service_examples_pass_with_docker(tmp_path) -> None:
    """The same two suites against a Docker daemon on 2 xdist workers: ``FROM pydock:host``
    builds on the daemon from the slim copy of this host's Python that the docker backend
    makes there (kept in the daemon: later runs reuse it while the host is unchanged)."""
    from conftest import require_service
    from dockerhelp import docker_api, session_leftovers

    api = docker_api()
    require_service(api is not None, "a Docker daemon (docker version)")
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", str(EXAMPLES / "webapp"),
                            str(EXAMPLES / "service_db"), "-q", "-n", "2", "-p",
                            "no:cacheprovider", "--pydock-backend=docker"],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "17 passed" in r.stdout
        assert session_leftovers(api) == []
        labels = api.inspect_image("pydock:host")["Config"]["Labels"]
        assert labels["org.pydock.python.version"] == platform.python_version()
    finally:
        if api is not None:
            _remove_images(api, ("example/notes", "example/kv", "example/shop"))


def _remove_images(api: object, names: tuple[str, ...]) -> None:
    """Remove the images of ``names``, children before parents (a 409 "image has
    dependent child images" is tried again once the others are gone)."""
    import docker.errors

    for _ in range(5):
        images = [i["Id"] for n in names for i in api.images(name=n)]  # type: ignore[attr-defined]
        if not images:
            return
        for image in images:
            try:
                api.remove_image(image, force=True)  # type: ignore[attr-defined]
            except docker.errors.APIError as exc:
                if exc.status_code not in (404, 409):
                    raise
    assert not [i for n in names for i in api.images(name=n)], names  # type: ignore[attr-defined]


def test_cli_image_example_passes_with_docker(tmp_path) -> None:
    """The same suite against a Docker daemon (--pydock-backend=docker)."""
    from conftest import require_service
    from dockerhelp import docker_api, session_leftovers

    api = docker_api()
    require_service(api is not None, "a Docker daemon (docker version)")
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", str(EXAMPLES / "cli_image"), "-q",
                            "-p", "no:cacheprovider", "--pydock-backend=docker"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "5 passed" in r.stdout
        assert session_leftovers(api) == []
    finally:
        if api is not None:
            for image in api.images(name="example/tools"):
                api.remove_image(image["Id"], force=True)
