"""What the benchmarks share: the busybox image, timing, the figures' line, docker's presence."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_busybox_tar  # noqa: E402
from pydock.models import ImageConfig  # noqa: E402
from pydock.store import Store  # noqa: E402


def busybox_store(work: Path) -> tuple[Path, Store]:
    """The busybox rootfs tar in ``work`` and a store under it holding it as bench-busybox."""
    tar = make_busybox_tar(work / "busybox.tar")
    store = Store(work / "store")
    with open(tar, "rb") as f:
        store.import_tar(f, config=ImageConfig(cmd=("sh",)), ref="bench-busybox")
    return tar, store


def measure(fn: Callable[[], object], n: int, warmup: int = 5) -> list[float]:
    """Milliseconds of ``n`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return times


def report(label: str, values: list[float], unit: str = "ms", count: str = "") -> float:
    """Print median, min, max and n of ``values``; returns the median."""
    med = statistics.median(values)
    print(f"{label:<46} median {med:8.2f} {unit}   min {min(values):8.2f}   "
          f"max {max(values):8.2f}   n {len(values)}{count}")
    return med


def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0
