"""Benchmark: per-test overhead of a fresh container per test, through the pytest plugin.

    sudo python bench/plugin_overhead.py [--tests 100] [--rounds 5]

Runs these pytest suites, each ``--rounds`` times, and prints wall-clock figures:
- empty: N tests that do nothing (the baseline);
- native: N tests that do nothing with a fresh busybox container each from the
  ``container`` fixture (created and started before the test, removed after it);
- docker backend (when a daemon answers): the native suite with ``--pydock-backend=docker``
  (the same fixtures, containers in the Docker daemon);
- docker (when a daemon answers): N tests, each with a fresh container of the same rootfs
  from ``docker run -d`` / ``docker rm -f`` through the docker SDK, in the same run.
Per-test overhead = (suite time - empty suite time) / N, as two figures:
- session: from the start of the pytest session to the end of its unconfigure (so the
  engine's start at the first test and its stop at the end are in it); the interpreter's
  start and the imports, the same in both suites, are not.  On this VM their time varies
  by +-0.2 s from run to run, +-2 ms per test, which would drown the difference;
- process: the whole pytest process, wall clock (that noise included).
The suites load pytest's own plugins and this one only (PYTEST_DISABLE_PLUGIN_AUTOLOAD).
They read bytecode as an installed package does (pip compiles it): where
PYTHONDONTWRITEBYTECODE is set, a source checkout would otherwise compile pydock's modules
in every session (~140 ms here), so a warm-up run first fills a private
PYTHONPYCACHEPREFIX that the measured runs read.
Empty and container suites alternate, so that a slow spell of the machine hits both.
Target (issue 4): native <= 10 ms per test, >= 20x faster than the docker suite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import busybox_store, docker_available, report  # noqa: E402
from pydock import ImageConfig  # noqa: E402

EMPTY = """
import pytest

@pytest.mark.parametrize("n", range({n}))
def test_empty(n):
    pass
"""

NATIVE = """
import pytest

@pytest.mark.parametrize("n", range({n}))
@pytest.mark.pydock(image="bench-busybox", command=["sleep", "300"], network="none")
def test_native(container, n):
    pass
"""

DOCKER = """
import docker, pytest

@pytest.fixture(scope="session")
def client():
    return docker.from_env()

@pytest.fixture
def container(client):
    c = client.containers.run("pydock-bench-busybox", ["sleep", "300"], detach=True,
                              network_mode="none")
    yield c
    c.remove(force=True)

@pytest.mark.parametrize("n", range({n}))
def test_docker(container, n):
    pass
"""


# Times the session: first sessionstart hook to last unconfigure hook (after the plugin's,
# which stops the engine); written where the bench reads it.
TIMER = """
import os, time
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    session.config._bench_t0 = time.perf_counter()

@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    with open(os.environ["BENCH_SESSION_FILE"], "w") as f:
        f.write(repr(time.perf_counter() - config._bench_t0))
"""


SUITE_ENV: dict[str, str] = {}  # more environment for the suites: see cache_bytecode()


def cache_bytecode(work: Path, warm_up: Callable[[], object]) -> None:
    """Where bytecode may not be written, give the suites a private PYTHONPYCACHEPREFIX
    that ``warm_up`` (a suite run allowed to write it) fills first."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return
    SUITE_ENV.update(PYTHONPYCACHEPREFIX=str(work / "pycache"), PYTHONDONTWRITEBYTECODE="")
    warm_up()
    del SUITE_ENV["PYTHONDONTWRITEBYTECODE"]


def suite_seconds(directory: Path, source: str, n: int, *args: str) -> tuple[float, float]:
    """(session seconds, whole process seconds) of one pytest run of ``source``."""
    test = directory / "test_bench.py"
    test.write_text(textwrap.dedent(source.format(n=n)))
    (directory / "conftest.py").write_text(TIMER)
    session_file = directory / "session.txt"
    t = time.perf_counter()
    # Only pytest and this plugin: other plugins installed here (hypothesis's takes ~0.8 s
    # at session end, varying by +-0.3 s) would only add noise to both suites.
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-p", "pytest_pydock.plugin", str(test), *args],
                       capture_output=True, text=True, cwd=directory,
                       env=os.environ | SUITE_ENV |
                       {"BENCH_SESSION_FILE": str(session_file),
                        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"benchmark suite failed:\n{r.stdout}\n{r.stderr}")
    return float(session_file.read_text()), elapsed


def per_test(label: str, suites: list[tuple[float, float]], empty: list[tuple[float, float]],
             n: int) -> tuple[float, float]:
    """Print the per-test figures of ``suites`` against the empty ones; their medians."""
    figures = []
    for i, what in enumerate(("session", "process")):
        base = statistics.median(e[i] for e in empty)
        figures.append(report(f"{label} ({what})", [(s[i] - base) / n * 1000 for s in suites],
                              "ms/test", " suites"))
    return figures[0], figures[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n = args.tests
    with tempfile.TemporaryDirectory(prefix="pydock-bench-") as tmp:
        work = Path(tmp)
        tar, store = busybox_store(work)
        store_arg = f"--pydock-store={store.root}"
        cache_bytecode(work, lambda: suite_seconds(work, NATIVE, 2, store_arg))
        empty, native = [], []
        for _ in range(args.rounds):
            empty.append(suite_seconds(work, EMPTY, n, store_arg))
            native.append(suite_seconds(work, NATIVE, n, store_arg))
        print(f"{n} tests per suite; empty suite median {statistics.median(e[0] for e in empty):.3f} s"
              f" (session), {statistics.median(e[1] for e in empty):.2f} s (process)")
        native_ms = per_test("native: fresh container per test", native, empty, n)
        if not docker_available():
            print("docker: no daemon reachable (start dockerd for the comparison); skipped")
            return
        from pydock import DockerBackend
        with DockerBackend() as engine, open(tar, "rb") as f:
            engine.import_tar(f, config=ImageConfig(cmd=("sh",)), ref="pydock-bench-busybox")
        try:
            backend, dock = [], []
            for _ in range(args.rounds):
                backend.append(suite_seconds(
                    work, NATIVE.replace("bench-busybox", "pydock-bench-busybox"), n,
                    "--pydock-backend=docker"))
                dock.append(suite_seconds(work, DOCKER, n))
        finally:
            subprocess.run(["docker", "rmi", "pydock-bench-busybox"], capture_output=True,
                           check=False)
        backend_ms = per_test("docker backend: fresh container per test", backend, empty, n)
        docker_ms = per_test("docker: fresh container per test", dock, empty, n)
        for i, what in enumerate(("session", "process")):
            print(f"ratio ({what}): docker/native = {docker_ms[i] / native_ms[i]:.1f}x, "
                  f"docker backend/native = {backend_ms[i] / native_ms[i]:.1f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
