"""``pydock.build`` in real pytest sessions: once for all xdist workers, progress, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import needs_root
from registry_server import registry_fixture  # noqa: F401  (the `registry` fixture)

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.usefixtures("no_leaks")

CONFTEST = """
import json, os, pytest

@pytest.fixture(scope="session")
def app_image(pydock):
    return pydock.build({ctx!r})

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
def project(pytester: pytest.Pytester, tmp_path: Path, store_dir: Path,
            busybox_image: str) -> tuple[Path, Path]:
    needs_root()
    ctx = tmp_path / "app"
    ctx.mkdir()
    (ctx / "data.txt").write_text("data\n")
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nCOPY data.txt /\nRUN sleep 0.3; echo 'built by RUN' > /built\n"
        'CMD ["cat", "/built"]\n')
    out = tmp_path / "out"
    out.mkdir()
    pytester.makeconftest(CONFTEST.format(ctx=str(ctx), out=str(out)))
    return ctx, out


def run(pytester: pytest.Pytester, store_dir: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(f"--pydock-store={store_dir}", "-p", "no:cacheprovider",
                                         *args, timeout=180)


def test_xdist_workers_build_each_step_once(pytester: pytest.Pytester, project, store_dir
                                            ) -> None:
    ctx, out = project
    pytester.makepyfile(test_a=TESTS, test_b=TESTS)
    result = run(pytester, store_dir, "-n", "2")
    result.assert_outcomes(passed=8)
    records = [json.loads(p.read_text()) for p in out.iterdir()]
    assert {r["worker"] for r in records} == {"gw0", "gw1"}
    assert len({r["image"] for r in records}) == 1
    assert sum(r["executed"] for r in records) == 3  # COPY, RUN, CMD: once in all

    # the next session finds every step in the cache
    for p in out.iterdir():
        p.unlink()
    result = run(pytester, store_dir)
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["*pydock: building *: step 2/4 COPY data.txt /*",
                                 "*1 image build: 0 steps run, 3 from the cache*"])
    assert sum(json.loads(p.read_text())["executed"] for p in out.iterdir()) == 0


def test_a_failing_build_is_each_dependent_tests_error(pytester: pytest.Pytester, project,
                                                       store_dir) -> None:
    ctx, _ = project
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo compiling; echo broken >&2; exit 2\n")
    pytester.makepyfile(test_a=TESTS)
    result = run(pytester, store_dir)
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines([
        "*pydock build failed: *Dockerfile:2: RUN: * returned a non-zero code: 2*",
        "*last output of the step*", "compiling", "broken"])
    assert "def build(" not in result.stdout.str()  # no plugin traceback
    assert result.stdout.str().count("compiling\n") >= 4
    assert result.stdout.str().count("pydock: building") == 2  # built (and failed) once


def test_session_networks_are_removed_at_the_end_and_after_sigkill(
        pytester: pytest.Pytester, store_dir: Path, busybox_image: str) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import leftovers
    from pydock import NativeBackend
    needs_root()

    def bridges() -> set[str]:
        return {n.bridge for n in NativeBackend(store_dir).networks() if n.store}

    pytester.makepyfile(test_net="""
        import os, time

        def test_on_a_network(pydock):
            net = pydock.network("app")
            with pydock.run("busybox", ["sleep", "300"], network=net, aliases=["db"]) as db, \\
                    pydock.run("busybox", ["sleep", "300"], network=net) as client:
                assert client.exec(["ping", "-c", "1", "-W", "2", "db"]).exit_code == 0
                if os.environ.get("HANG"):
                    print("RUNNING", flush=True)
                    time.sleep(300)
    """)
    result = run(pytester, store_dir)
    result.assert_outcomes(passed=1)
    assert bridges() == set()  # removed at session end

    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-s", f"--pydock-store={store_dir}",
                             "-p", "no:cacheprovider"], cwd=pytester.path,
                            stdout=subprocess.PIPE, env={**os.environ, "HANG": "1"})
    assert proc.stdout is not None
    for line in proc.stdout:
        if b"RUNNING" in line:
            break
    assert len(bridges()) == 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10  # its monitor kills its containers, then exits
    while leftovers(store_dir).get("processes") and time.monotonic() < deadline:
        time.sleep(0.1)
    NativeBackend(store_dir).sweep()  # what the next session (or any pydock command) runs first
    assert bridges() == set()
    assert not leftovers(store_dir)


def test_pull_gets_an_image_from_a_registry(pytester: pytest.Pytester, store_dir: Path,
                                            busybox_image: str, registry) -> None:
    from pydock import Store, push
    needs_root()
    ref = f"{registry.host}/plugin-pull/busybox:1"
    store = Store(store_dir)
    push(store, "busybox", ref)
    store.remove_image("busybox")  # only the registry has it now
    pytester.makepyfile(test_pull=f"""
        def test_pull(pydock):
            image = pydock.pull("{ref}")
            assert pydock.pull("{ref}").id == image.id  # the second time from the store
            with pydock.run(image, ["echo", "pulled"], network="none") as c:
                assert c.wait(10) == 0 and "pulled" in c.logs()
    """)
    run(pytester, store_dir).assert_outcomes(passed=1)
    assert store.image(ref).id


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
