"""Benchmark: per-test overhead of a fresh container per test, through the pytest plugin.

    sudo python bench/plugin_overhead.py [--tests 100] [--rounds 3]

Runs three pytest sessions, each ``--rounds`` times, and prints wall-clock figures:
- empty: N tests that do nothing (the baseline);
- native: N tests, each getting a fresh busybox container from the ``container`` fixture
  (created, started, ready, used for one exec... no: nothing, then removed);
- docker backend (when a daemon answers): the native suite with ``--pydock-backend=docker``
  (the same fixtures, containers in the Docker daemon);
- docker (when a daemon answers): N tests, each with a fresh container of the same rootfs
  from ``docker run -d`` / ``docker rm -f`` through the docker SDK, in the same run.
Per-test overhead = (suite time - empty suite time) / N.  Target (issue 4): native <= 10 ms
per test, >= 20x faster than the docker suite.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
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


def suite_seconds(directory: Path, source: str, n: int, *args: str) -> float:
    test = directory / "test_bench.py"
    test.write_text(textwrap.dedent(source.format(n=n)))
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(test), *args], capture_output=True, text=True, cwd=directory)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"benchmark suite failed:\n{r.stdout}\n{r.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.tests
    with tempfile.TemporaryDirectory(prefix="pydock-bench-") as tmp:
        work = Path(tmp)
        tar, store = busybox_store(work)
        store_arg = f"--pydock-store={store.root}"
        empty = [suite_seconds(work, EMPTY, n, store_arg) for _ in range(args.rounds)]
        native = [suite_seconds(work, NATIVE, n, store_arg) for _ in range(args.rounds)]
        base = statistics.median(empty)
        print(f"{n} tests per suite; empty suite median {base:.2f} s")
        native_ms = report("native: fresh container per test",
                           [(s - base) / n * 1000 for s in native], "ms/test", " suites")
        if not docker_available():
            print("docker: no daemon reachable (start dockerd for the comparison); skipped")
            return
        from pydock import DockerBackend
        with DockerBackend() as engine, open(tar, "rb") as f:
            engine.import_tar(f, config=ImageConfig(cmd=("sh",)), ref="pydock-bench-busybox")
        try:
            backend = [suite_seconds(work, NATIVE.replace("bench-busybox", "pydock-bench-busybox"),
                                     n, "--pydock-backend=docker") for _ in range(args.rounds)]
            dock = [suite_seconds(work, DOCKER, n) for _ in range(args.rounds)]
        finally:
            subprocess.run(["docker", "rmi", "pydock-bench-busybox"], capture_output=True,
                           check=False)
        backend_ms = report("docker backend: fresh container per test",
                            [(s - base) / n * 1000 for s in backend], "ms/test", " suites")
        docker_ms = report("docker: fresh container per test",
                           [(s - base) / n * 1000 for s in dock], "ms/test", " suites")
        print(f"ratio: docker/native = {docker_ms / native_ms:.1f}x, "
              f"docker backend/native = {backend_ms / native_ms:.1f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
