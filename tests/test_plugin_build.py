"""``pydock.build`` in real pytest sessions: once for all xdist workers, progress, failures."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import needs_root
from dockerhelp import BOTH, docker_busybox, docker_raw, pd_backend, session_leftovers
from registry_server import registry_fixture  # noqa: F401  (the `registry` fixture)

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.usefixtures("no_leaks")
__all__ = ["docker_busybox", "docker_raw", "pd_backend"]  # fixtures used here

# Backend-independent behaviour runs against both engines (docker: a real daemon).

CONFTEST = """
import json, os, pytest

@pytest.fixture(scope="session")
def app_image(pydock):
    return pydock.build({ctx!r}, tag={tag!r})

@pytest.fixture
def record(app_image, pydock):
    yield
    out = {{"worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "image": app_image.id,
           "executed": sum(b.executed for b in pydock.builds)}}
    with open(os.path.join({out!r}, out["worker"]), "w") as f:
        json.dump(out, f)
"""

TESTS = """
import pytest

@pytest.mark.parametrize("n", range(4))
def test_uses_image(pydock, app_image, record, n):
    with pydock.run(app_image, ["cat", "/built"]) as c:
        assert c.wait(10) == 0
        assert c.logs() == "built by RUN\\n"
"""





@pytest.fixture
def engine(pd_backend: str, store_dir: Path, request: pytest.FixtureRequest
           ) -> tuple[str, list[str]]:
    """(the busybox image's name, the pytest options) of the chosen backend."""
    if pd_backend == "native":
        needs_root()
        return request.getfixturevalue("busybox_image"), [f"--pydock-store={store_dir}"]
    return request.getfixturevalue("docker_busybox"), ["--pydock-backend=docker"]


@pytest.fixture
def project(pytester: pytest.Pytester, tmp_path: Path, engine, pd_backend: str,
            request: pytest.FixtureRequest) -> Iterator[tuple[Path, Path]]:
    """A build context FROM the backend's busybox; docker: its image is tagged for this test
    and removed after (a native store is thrown away with the test)."""
    image, _ = engine
    tag = None if pd_backend == "native" else f"pydock-test/plugin-build:{tmp_path.name[-12:]}"
    ctx = tmp_path / "app"
    ctx.mkdir()
    (ctx / "data.txt").write_text("data\n")
    (ctx / "Dockerfile").write_text(
        f"FROM {image}\nCOPY data.txt /\n"
        "RUN sleep 0.3; echo 'built by RUN' > /built; head -c 16 /dev/urandom > /nonce\n"
        'CMD ["cat", "/built"]\n')
    out = tmp_path / "out"
    out.mkdir()
    pytester.makeconftest(CONFTEST.format(ctx=str(ctx), out=str(out), tag=tag))
    yield ctx, out
    if tag is not None:
        api = request.getfixturevalue("docker_raw")
        for found in api.images(name=tag):
            api.remove_image(found["Id"], force=True)


def run(pytester: pytest.Pytester, engine: tuple[str, list[str]], *args: str,
        ) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*engine[1], "-p", "no:cacheprovider", *args,
                                         timeout=180)


@BOTH
def test_xdist_workers_build_each_step_once(pytester: pytest.Pytester, project, engine,
                                            pd_backend: str) -> None:
    ctx, out = project
    pytester.makepyfile(test_a=TESTS, test_b=TESTS)
    result = run(pytester, engine, "-n", "2")
    result.assert_outcomes(passed=8)
    records = [json.loads(p.read_text()) for p in out.iterdir()]
    assert {r["worker"] for r in records} == {"gw0", "gw1"}
    # one image: the RUN step writes random bytes, so a second run of it gives another one
    assert len({r["image"] for r in records}) == 1
    first = records[0]["image"]
    if pd_backend == "native":
        assert sum(r["executed"] for r in records) == 3  # COPY, RUN, CMD: once in all

    # the next session finds every step in the cache
    for p in out.iterdir():
        p.unlink()
    result = run(pytester, engine)
    result.assert_outcomes(passed=8)
    assert {json.loads(p.read_text())["image"] for p in out.iterdir()} == {first}
    result.stdout.fnmatch_lines(["*pydock: building *: step 2/4 COPY data.txt /*"])
    if pd_backend == "docker":
        # README, "what differs": the daemon's builder runs the steps; the summary counts
        # no steps
        assert "image build" not in result.stdout.str()
        return
    result.stdout.fnmatch_lines(["*1 image build: 0 steps run, 3 from the cache*"])
    assert sum(json.loads(p.read_text())["executed"] for p in out.iterdir()) == 0


@BOTH
def test_a_failing_build_is_each_dependent_tests_error(pytester: pytest.Pytester, project,
                                                       engine, pd_backend: str) -> None:
    ctx, _ = project
    (ctx / "Dockerfile").write_text(
        f"FROM {engine[0]}\nRUN echo compiling; echo broken >&2; exit 2\n")
    pytester.makepyfile(test_a=TESTS)
    result = run(pytester, engine)
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines([
        "*pydock build failed: *Dockerfile:2: RUN: * returned a non-zero code: 2*",
        "*last output of the step*", "compiling"])
    # docker's builder sends the step's stdout and stderr apart: their order may change
    result.stdout.fnmatch_lines(["*last output of the step*", "broken"])
    assert "def build(" not in result.stdout.str()  # no plugin traceback
    assert result.stdout.str().count("compiling\n") >= 4
    assert result.stdout.str().count("pydock: building") == 2  # built (and failed) once


@BOTH
def test_session_networks_are_removed_at_the_end_and_after_sigkill(
        pytester: pytest.Pytester, store_dir: Path, engine, pd_backend: str,
        request: pytest.FixtureRequest) -> None:
    import os
    import secrets
    import signal
    import subprocess
    import sys
    import time

    from conftest import leftovers
    from pydock import DockerBackend, NativeBackend

    prefix = f"app{secrets.token_hex(3)}"
    api = request.getfixturevalue("docker_raw") if pd_backend == "docker" else None

    def networks() -> set[str]:
        if api is not None:  # the daemon's networks this test's sessions made
            return {n["Name"] for n in api.networks(filters={"label": "pydock=1"})
                    if n["Name"].startswith(f"{prefix}-")}
        return {n.bridge for n in NativeBackend(store_dir).networks() if n.store}

    pytester.makepyfile(test_net=f"""
        import os, time

        def test_on_a_network(pydock):
            net = pydock.network("{prefix}")
            with pydock.run("{engine[0]}", ["sleep", "300"], network=net, aliases=["db"]) as db, \\
                    pydock.run("{engine[0]}", ["sleep", "300"], network=net) as client:
                assert client.exec(["ping", "-c", "1", "-W", "2", "db"]).exit_code == 0
                if os.environ.get("HANG"):
                    print("RUNNING", flush=True)
                    time.sleep(300)
    """)
    result = run(pytester, engine)
    result.assert_outcomes(passed=1)
    assert networks() == set()  # removed at session end

    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-s", *engine[1],
                             "-p", "no:cacheprovider"], cwd=pytester.path,
                            stdout=subprocess.PIPE, env={**os.environ, "HANG": "1"})
    assert proc.stdout is not None
    for line in proc.stdout:
        if b"RUNNING" in line:
            break
    assert len(networks()) == 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if api is not None:
        assert len(networks()) == 1  # nobody was left to remove it, nor its containers
        DockerBackend(api).sweep()  # what the next session runs before its first container
        assert networks() == set()
        assert session_leftovers(api) == []
        return
    deadline = time.monotonic() + 10  # its monitor kills its containers, then exits
    while leftovers(store_dir).get("processes") and time.monotonic() < deadline:
        time.sleep(0.1)
    NativeBackend(store_dir).sweep()  # what the next session (or any pydock command) runs first
    assert networks() == set()
    assert not leftovers(store_dir)


@BOTH
def test_pull_gets_an_image_from_a_registry(pytester: pytest.Pytester, store_dir: Path,
                                            busybox_image: str, registry, pd_backend: str,
                                            request: pytest.FixtureRequest) -> None:
    """docker: the daemon pulls (from a registry on 127.0.0.1, which it trusts over http)."""
    from pydock import Store, push
    needs_root()  # the image reaches the registry from a native store
    ref = f"{registry.host}/plugin-pull/busybox:{pd_backend}"
    store = Store(store_dir)
    push(store, "busybox", ref)
    store.remove_image("busybox")  # only the registry has it now
    options = [f"--pydock-store={store_dir}"] if pd_backend == "native" else \
        ["--pydock-backend=docker"]
    api = request.getfixturevalue("docker_raw") if pd_backend == "docker" else None
    pytester.makepyfile(test_pull=f"""
        def test_pull(pydock):
            image = pydock.pull("{ref}")
            assert pydock.pull("{ref}").id == image.id  # the second time from the store
            with pydock.run(image, ["echo", "pulled"], network="none") as c:
                assert c.wait(10) == 0 and "pulled" in c.logs()
    """)
    try:
        run(pytester, ("busybox", options)).assert_outcomes(passed=1)
        if api is None:
            assert store.image(ref).id
        else:
            assert api.inspect_image(ref)["RepoTags"] == [ref]
    finally:
        if api is not None and api.images(name=ref):
            api.remove_image(ref, force=True)


def test_networks_with_aliases_on_the_docker_backend(busybox_tar: Path) -> None:
    """``pydock.network()`` and ``aliases=`` work the same through a Docker daemon."""
    from conftest import require_service
    from dockerhelp import docker_api
    from pydock import DockerBackend, ImageConfig

    from pytest_pydock.session import PydockSession
    api = docker_api()
    require_service(api is not None, "a Docker daemon (docker version)")
    with PydockSession(DockerBackend()) as pd:
        with open(busybox_tar, "rb") as f:
            image = pd.backend.import_tar(f, config=ImageConfig(cmd=("sh",)),
                                          ref="pydock-test/net-busybox:1")
        net = pd.network("app")
        with pd.run(image, ["sleep", "60"], network=net, aliases=["db"]), \
                pd.run(image, ["sleep", "60"], network=net) as client, \
                pd.run(image, ["sleep", "60"]) as outsider:
            assert client.exec(["ping", "-c", "1", "-W", "2", "db"]).exit_code == 0
            assert outsider.exec(["ping", "-c", "1", "-W", "1", "db"]).exit_code != 0
    assert not api.networks(names=[net])
    api.remove_image("pydock-test/net-busybox:1")
