"""Shared fixtures: a private store per test, a busybox rootfs tarball, a CLI runner."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest


def _load_the_engine_now() -> None:
    """Load pydock's public modules and the plugin's session module before any test runs.
    The ``pytester`` fixture drops the modules first imported during its test; a later
    import then makes second copies, while ``pydock`` keeps the names it already handed
    out from the first (RunOptions' "unset" default then fails the new spec module's
    identity check).  Which test imports a module first depends on the order, which
    xdist changes."""
    import pydock
    for name in pydock.__all__:
        try:
            getattr(pydock, name)
        except ImportError:  # an optional extra (docker) not installed
            pass
    import pytest_pydock.session  # noqa: F401


_load_the_engine_now()

BUSYBOX = shutil.which("busybox") or "/bin/busybox"

# Applets the test image links to busybox (a static binary, so no libraries are needed).
APPLETS = tuple(
    "sh ls cat echo true false sleep env id ps touch rm mkdir hostname mount kill grep head "
    "tail wc sed awk printf test stat readlink ln chmod chown dd yes seq whoami uname nc "
    "httpd wget date tr cut sort find mv cp top free df pwd tee xargs basename dirname which "
    "netstat ping vi less more od md5sum sha256sum du "
    .split()
)


def make_busybox_tar(path: Path) -> Path:
    """Write a minimal rootfs tarball: static busybox, applet links, /etc/passwd and group."""
    def add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = mode
        tar.addfile(info)

    def add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w") as tar:
        for d in ("bin", "etc", "tmp", "root", "home", "home/app", "var", "usr", "usr/bin"):
            add_dir(tar, d, 0o1777 if d == "tmp" else 0o755)
        with open(BUSYBOX, "rb") as f:
            add_file(tar, "bin/busybox", f.read(), 0o755)
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
        add_file(
            tar,
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\n"
            b"app:x:1000:1000:app:/home/app:/bin/sh\n"
            b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        add_file(
            tar,
            "etc/group",
            b"root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n",
        )
    return path


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox rootfs tarball (made once per session)."""
    if not os.path.exists(BUSYBOX):
        pytest.skip("busybox-static is not installed (apt-get install busybox-static)")
    return make_busybox_tar(tmp_path_factory.mktemp("rootfs") / "busybox.tar")


@pytest.fixture
def store_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A fresh, private store directory, also exported as PYDOCK_STORE for CLI runs.

    Afterwards its containers' tmpfs run directory is deleted (the store is throw-away).
    """
    import shutil

    from pydock.backends.native.state import store_tag

    root = tmp_path / "store"
    monkeypatch.setenv("PYDOCK_STORE", str(root))
    yield root
    if not leftovers(root).get("processes"):
        shutil.rmtree(f"/dev/shm/pydock-{store_tag(root)}", ignore_errors=True)


def pydock_cli(*args: str, input: bytes | None = None, timeout: float = 60,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run the real ``pydock`` CLI (``python -m pydock``) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "pydock", *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        env=env,
    )


def require_service(available: bool, what: str) -> None:
    """Skip a test whose real service (a Docker daemon, a registry server) is missing, or fail
    it when PYDOCK_REQUIRE_SERVICES=1 (set by .ci/run, which starts them): in CI a missing
    service is a broken setup, not a reason to skip."""
    if available:
        return
    if os.environ.get("PYDOCK_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required (PYDOCK_REQUIRE_SERVICES=1) but not available")
    pytest.skip(f"{what} is not available")


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the native engine needs root")


@pytest.fixture
def busybox_image(store_dir: Path, busybox_tar: Path) -> str:
    """The busybox rootfs imported into the test's store as ``busybox:latest`` (CMD sh)."""
    from pydock.models import ImageConfig
    from pydock.store import Store

    with open(busybox_tar, "rb") as f:
        Store(store_dir).import_tar(f, config=ImageConfig(cmd=("sh",)), ref="busybox")
    return "busybox"


@pytest.fixture
def backend(store_dir: Path, busybox_image: str):  # type: ignore[no-untyped-def]
    """A native backend over the test's store; closed (containers killed) afterwards."""
    needs_root()
    from pydock.backends.native.backend import NativeBackend

    b = NativeBackend(store_dir)
    yield b
    b.close()


def leftovers(store_dir: Path) -> dict[str, list[str]]:
    """Mounts, processes and cgroups on the host that belong to the store ``store_dir``."""
    found: dict[str, list[str]] = {"mounts": [], "processes": [], "cgroups": []}
    from pydock.backends.native.state import store_tag

    run_dirs = (str(store_dir / "containers"),
                f"/dev/shm/pydock-{store_tag(store_dir)}/containers")
    with open("/proc/self/mountinfo") as f:
        found["mounts"] = [line for line in f if str(store_dir) in line]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm in ("pydock-monitor", "pydock-factory", "pydock-zygote", "pydock-init") and \
                str(store_dir) in cmdline:
            found["processes"].append(f"{pid} {comm} {cmdline}")
        elif comm == "pydock-delay" and any(d in cmdline for d in run_dirs):
            found["processes"].append(f"{pid} {comm} {cmdline}")
        elif _in_container_of(pid, run_dirs):
            found["processes"].append(f"{pid} {comm} {cmdline} (in a container)")
    from pydock.backends.native.state import cgroup_prefix

    prefix = cgroup_prefix(store_dir / "containers")
    for dirpath, dirnames, _ in os.walk("/sys/fs/cgroup"):
        for d in dirnames:
            if d.startswith(prefix):
                found["cgroups"].append(os.path.join(dirpath, d))
    found["links"] = network_links(store_dir)
    found["nft rules"] = published_rules(store_dir)
    return {k: v for k, v in found.items() if v}


def published_rules(store_dir: Path) -> list[str]:
    """Published ports' DNAT rules (table ``ip pydock``) of the store's containers, and of
    containers without a live address lease (what the sweep removes); nothing to read
    (no libnftables) until a port was ever published on this host."""
    from pydock.backends.native.network_ipam import peek, state_dir
    from pydock.backends.native.state import store_tag

    if os.geteuid() != 0 or not (state_dir() / "published").exists():
        return []
    from pydock.backends.native.portmap import PortForwarder

    run = Path(f"/dev/shm/pydock-{store_tag(store_dir)}/containers")
    mine = set(os.listdir(run)) if run.is_dir() else set()
    live = {(lease.cid, lease.ip) for lease in peek().live_leases() if lease.cid}
    with PortForwarder() as fw:
        return [m.comment() for m in fw.mappings()
                if m.container_id in mine or (m.container_id, m.container_ip) not in live]


def network_links(store_dir: Path) -> list[str]:
    """Links named pdk* of the store: veth host ends (pdk<store tag>...), bridges of its
    networks, and bridges named like a network's that no network owns (a leak of anyone)."""
    from pydock.backends.native.network_ipam import BRIDGE_PREFIX, peek
    from pydock.backends.native.state import store_tag

    veths = f"pdk{store_tag(store_dir)[:6]}"
    nets = peek().networks()
    mine = {n.bridge for n in nets if n.store == str(store_dir.resolve())}
    known = {n.bridge for n in nets}
    return [name for name in sorted(os.listdir("/sys/class/net"))
            if name.startswith(veths) or name in mine
            or (name.startswith(BRIDGE_PREFIX) and name not in known)]


def _in_container_of(pid: str, run_dirs: tuple[str, ...]) -> bool:
    """Whether the process runs in a container of the store (its root is that store's
    overlay: the first line of its mountinfo names the container's upper dir)."""
    try:
        if os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
            return False
        with open(f"/proc/{pid}/mountinfo") as f:
            text = f.read()
    except OSError:
        return False
    return any(f"upperdir={d}/" in text for d in run_dirs)


@pytest.fixture
def no_leaks(store_dir: Path):  # type: ignore[no-untyped-def]
    """Fails the test when mounts, processes or cgroups of its store remain afterwards."""
    yield
    import time

    deadline = time.monotonic() + 10
    while (left := leftovers(store_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"leaked: {left}"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The test run leaves no bridge of ours: what a test killed on purpose (SIGKILL of a
    session) left, the sweep removes, as the next start of any pydock does."""
    if os.geteuid() != 0 or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    try:
        from pydock.backends.native.network import sweep_networks
    except ImportError:  # no networking here: nothing to clean
        return
    sweep_networks()
