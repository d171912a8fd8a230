"""Benchmark: a fresh networked container, from start to the first TCP connect from the host.

    sudo python bench/network_container.py [-n 100]

Native engine, through the Python API (the path the pytest fixtures take): create a busybox
container running ``nc -ll -p 8080`` (a TCP server), start it, connect to it from the host
until the connect succeeds, remove it.  Printed for the default bridge network (a network
namespace from the ready pool; the host connects to the container's IP), and, from the same
run, the no-network figures: ``--network none`` (start until the workload runs: nothing can
connect) and ``--network host`` (start until the first connect to 127.0.0.1).
Target (issue: networking): bridge start -> first connect median <= 15 ms.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import busybox_store, report
from pydock.backends.native.backend import NativeBackend

SERVER = ["nc", "-ll", "-p", "{port}", "-e", "true"]


def connect_until_up(ip: str, port: int, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while True:
        s = socket.socket()
        s.settimeout(0.5)
        try:
            s.connect((ip, port))
            return
        except OSError as exc:
            if time.monotonic() > end:
                raise
            if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, None):
                time.sleep(0.0005)
            time.sleep(0.0002)
        finally:
            s.close()


def run(backend: NativeBackend, network: str, n: int, warmup: int = 5
        ) -> tuple[list[float], list[float]]:
    """(start -> ready, create -> removed) in ms for ``n`` fresh containers."""
    ready, total = [], []
    for i in range(n + warmup):
        port = 8080 if network != "host" else 20000 + i % 20000
        t0 = time.perf_counter()
        c = backend.create("bench-busybox", network=network,
                           command=[a.format(port=port) for a in SERVER])
        t1 = time.perf_counter()
        c.start()
        if network == "host":
            connect_until_up("127.0.0.1", port)
        elif network != "none":
            ip = c.ip_address()
            assert ip is not None
            connect_until_up(ip, port)
        t2 = time.perf_counter()
        c.remove(force=True, background=True)
        t3 = time.perf_counter()
        if i >= warmup:
            ready.append((t2 - t1) * 1000)
            total.append((t3 - t0) * 1000)
    return ready, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=100, help="repetitions (default 100)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pydock-bench-") as tmp:
        _, store = busybox_store(Path(tmp))
        with NativeBackend(store) as backend:
            print(f"pydock native engine, {os.cpu_count()} CPUs, busybox `nc -ll` server")
            backend.network_manager().prefill()
            results = {}
            for network in ("bridge", "none", "host"):
                results[network] = run(backend, network, args.n)
            report("bridge: start -> first TCP connect (host->IP)", results["bridge"][0])
            report("none:   start -> running (no connect possible)", results["none"][0])
            report("host:   start -> first TCP connect (127.0.0.1)", results["host"][0])
            report("bridge: create+start+connect+rm", results["bridge"][1])
            report("none:   create+start+rm", results["none"][1])


if __name__ == "__main__":
    main()
