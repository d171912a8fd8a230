"""Benchmark: cold build and no-op rebuild of a realistic multi-stage Dockerfile (prints figures).

    sudo python bench/build.py [-n 5] [--noop-n 20]

The Dockerfile (13 steps, 3 stages) copies a static busybox, runs several RUNs and COPYs a
source tree of 300 files; it needs no registry, so Docker builds the same thing.  Cold: an
empty store (pydock) / ``--no-cache`` (docker).  No-op rebuild: everything cached; pydock
is timed through the Python API (what the pytest fixture calls) and through the CLI.  When a
Docker daemon answers, ``docker build`` (its classic builder: this machine has no buildx) is
timed in the same run.  Targets (issue 3): no-op rebuild <= 100 ms; cold build no slower
than docker build.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import docker_available, measure, report
from conftest import BUSYBOX
from pydock.backends.native.backend import NativeBackend
from pydock.builder import BuildOptions, build
from pydock.store import Store

DOCKERFILE = """\
FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]

FROM base AS compile
ENV PATH=/bin
COPY src/ /src/
RUN cd /src && find . -type f | sort | xargs cat | md5sum > /checksum && tar -cf /app.tar .

FROM base
ENV PATH=/bin APP_HOME=/app
WORKDIR /app
COPY --from=compile /app.tar /checksum /app/
RUN tar -xf app.tar && rm app.tar && echo ok > ready
COPY config/ ./config/
CMD ["sh", "-c", "cat /app/checksum"]
"""


def make_context(root: Path) -> Path:
    ctx = root / "ctx"
    for i in range(300):
        path = ctx / "src" / f"pkg{i % 12}" / f"module_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# module {i}\n" + f"def f():\n    return {i}\n" * 20)
    (ctx / "config").mkdir()
    (ctx / "config/app.ini").write_text("[app]\nworkers = 2\n")
    shutil.copy(BUSYBOX, ctx / "busybox")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / ".dockerignore").write_text("**/__pycache__\n")
    return ctx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=5, help="cold builds (default 5)")
    parser.add_argument("--noop-n", type=int, default=20, help="no-op rebuilds (default 20)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pydock-bench-build-"))
    try:
        ctx = make_context(root)
        stores: list[Path] = []

        def cold() -> None:
            store_root = root / f"store{len(stores)}"
            stores.append(store_root)
            store = Store(store_root)
            with NativeBackend(store) as backend:
                build(store, BuildOptions(context=str(ctx)), backend=backend)

        native_cold = report("pydock: cold build", measure(cold, args.n, warmup=1))
        store = Store(stores[-1])
        with NativeBackend(store) as backend:
            native_noop = report("pydock: no-op rebuild (API)", measure(
                lambda: build(store, BuildOptions(context=str(ctx)), backend=backend),
                args.noop_n, warmup=2))
        env = {**os.environ, "PYDOCK_STORE": str(stores[-1])}
        report("pydock: no-op rebuild (CLI, incl. start-up)", measure(
            lambda: subprocess.run([sys.executable, "-m", "pydock", "build", "-q", str(ctx)],
                                   check=True, capture_output=True, env=env),
            args.noop_n, warmup=1))
        if not docker_available():
            print("docker: no daemon reachable (start dockerd for the comparison); skipped")
            return
        tag = f"pydock-bench-build:{os.getpid()}"
        denv = {**os.environ, "DOCKER_BUILDKIT": "0"}

        def docker_build(*extra: str) -> None:
            subprocess.run(["docker", "build", "-q", *extra, "-t", tag, str(ctx)], check=True,
                           capture_output=True, env=denv)

        try:
            docker_cold = report("docker: cold build (--no-cache)",
                                 measure(lambda: docker_build("--no-cache"), args.n, warmup=1))
            docker_noop = report("docker: no-op rebuild",
                                 measure(docker_build, args.noop_n, warmup=1))
        finally:
            subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)  # + its parents
        print(f"ratio cold build:     docker/pydock = {docker_cold / native_cold:.1f}x")
        print(f"ratio no-op rebuild:  docker/pydock = {docker_noop / native_noop:.1f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
