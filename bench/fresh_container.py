"""Benchmark: a fresh container per test, and exec into a running one (prints figures).

    sudo python bench/fresh_container.py [-n 200]

Native engine: create + start + wait for ``true`` + remove, through the Python API (the
path the pytest fixtures take), and ``exec true`` into a running container.  When a Docker
daemon answers (``docker info``), the same busybox rootfs is imported into Docker and the
same two figures are taken through pydock's docker backend (``DockerBackend``, what
``--pydock-backend=docker`` uses) and through the docker CLI (``docker run --rm IMAGE true``
/ ``docker exec``), in the same run, with the ratios.
All containers here run with ``--network none`` (loopback only) on every side, so the
figures compare the container machinery; bench/network_container.py times networked ones.
Targets (issue 2): native median <= 10 ms per fresh container, exec <= 10 ms.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import busybox_store, docker_available, measure, report
from pydock.backends.native.backend import NativeBackend
from pydock.models import ImageConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200, help="repetitions (default 200)")
    parser.add_argument("--docker-n", type=int, default=30, help="docker repetitions")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pydock-bench-") as tmp:
        tar, store = busybox_store(Path(tmp))
        with NativeBackend(store) as backend:
            def fresh() -> None:
                c = backend.create("bench-busybox", command=["true"], network="none")
                c.start()
                c.wait()
                c.remove()

            print(f"pydock native engine, {os.cpu_count()} CPUs, busybox image")
            native = report("native: create+start+wait+rm `true` (net none)",
                            measure(fresh, args.n))
            svc = backend.run("bench-busybox", command=["sleep", "3600"], init=True)
            native_exec = report("native: exec `true` in running container",
                                 measure(lambda: svc.exec(["true"]), args.n))
            svc.remove(force=True)

        if not docker_available():
            print("docker: no daemon reachable (start dockerd for the comparison); skipped")
            return
        from pydock import DockerBackend
        with DockerBackend() as engine:
            with open(tar, "rb") as f:
                engine.import_tar(f, config=ImageConfig(cmd=("sh",)), ref="pydock-bench-busybox")

            def docker_fresh() -> None:
                c = engine.create("pydock-bench-busybox", command=["true"], network="none")
                c.start()
                c.wait()
                c.remove()

            backend_run = report("docker backend: create+start+wait+rm `true`",
                                 measure(docker_fresh, args.docker_n, warmup=2))
            svc2 = engine.run("pydock-bench-busybox", command=["sleep", "3600"], init=True)
            backend_exec = report("docker backend: exec `true`",
                                  measure(lambda: svc2.exec(["true"]), args.docker_n, warmup=2))
            svc2.remove(force=True)
        try:
            run = measure(lambda: subprocess.run(
                ["docker", "run", "--rm", "--network", "none", "pydock-bench-busybox", "true"],
                check=True), args.docker_n, warmup=2)
            docker = report("docker: run --rm `true`", run)
            name = "pydock-bench-exec"
            subprocess.run(["docker", "run", "-d", "--rm", "--name", name,
                            "pydock-bench-busybox", "sleep", "3600"],
                           check=True, capture_output=True)
            try:
                docker_exec = report("docker: exec `true`", measure(lambda: subprocess.run(
                    ["docker", "exec", name, "true"], check=True), args.docker_n, warmup=2))
            finally:
                subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        finally:
            subprocess.run(["docker", "rmi", "pydock-bench-busybox"], capture_output=True)
        print(f"ratio fresh container: docker/native = {docker / native:.1f}x, "
              f"docker backend/native = {backend_run / native:.1f}x")
        print(f"ratio exec:            docker/native = {docker_exec / native_exec:.1f}x, "
              f"docker backend/native = {backend_exec / native_exec:.1f}x")


if __name__ == "__main__":
    main()
