"""Nothing leaks: after normal runs, SIGKILL of the client or the monitor, and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import leftovers, needs_root

pytestmark = pytest.mark.usefixtures("no_leaks")


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def running_container_pids(store_dir: Path) -> list[int]:
    pids = []
    for state in store_dir.glob("containers/*/state.json"):
        doc = json.loads(state.read_text())
        if doc.get("status") == "running":
            pids.append(int(doc["pid"]))
    return pids


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigkill_of_the_python_client_kills_its_containers(store_dir, busybox_image) -> None:
    needs_root()
    script = textwrap.dedent(f"""
        import sys, time
        from pydock.backends.native.backend import NativeBackend
        b = NativeBackend({str(store_dir)!r})
        c = b.run("busybox", command=["sleep", "100"])
        print(c.pid, flush=True)
        time.sleep(100)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    assert alive(pid)
    proc.kill()
    proc.wait()
    wait_for(lambda: not alive(pid))
    wait_for(lambda: not leftovers(store_dir))
    state = json.loads(next(store_dir.glob("containers/*/state.json")).read_text())
    assert state["status"] == "exited" and state["exit_code"] == 137


def test_sigkill_of_the_monitor_kills_containers_and_next_command_sweeps(
        store_dir, busybox_image) -> None:
    needs_root()
    from pydock.backends.native.backend import NativeBackend

    b = NativeBackend(store_dir)
    c = b.run("busybox", command=["sleep", "100"], memory=64 * 1024 * 1024)
    pid = c.pid
    cgroups = json.loads((c.dir.path / "state.json").read_text())["cgroup"]["paths"]
    assert cgroups and all(os.path.isdir(p) for p in cgroups)
    os.kill(b.monitor().process.pid, signal.SIGKILL)
    b.monitor().process.wait()
    wait_for(lambda: not alive(pid))  # PR_SET_PDEATHSIG took the container along
    # the next command sweeps the cgroups the dead monitor left
    out = subprocess.run([sys.executable, "-m", "pydock", "ps", "-a"], capture_output=True,
                         text=True, check=True).stdout
    assert "Exited (137)" in out
    assert not any(os.path.isdir(p) for p in cgroups)


def test_sigkill_of_a_foreground_cli_run(store_dir, busybox_image) -> None:
    needs_root()
    proc = subprocess.Popen([sys.executable, "-m", "pydock", "run", "busybox", "sleep", "100"])
    wait_for(lambda: bool(running_container_pids(store_dir)))
    pid = running_container_pids(store_dir)[0]
    proc.kill()
    proc.wait()
    wait_for(lambda: not alive(pid))
    wait_for(lambda: not leftovers(store_dir))


@pytest.mark.parametrize("init", [True, False])
def test_ctrl_c_of_a_foreground_cli_run(store_dir, busybox_image, init) -> None:
    needs_root()
    args = ["--init"] if init else []
    proc = subprocess.Popen([sys.executable, "-m", "pydock", "run", "--rm", *args, "busybox",
                             "sleep", "100"], stderr=subprocess.PIPE)
    wait_for(lambda: bool(running_container_pids(store_dir)))
    proc.send_signal(signal.SIGINT)
    if not init:
        # sleep as PID 1 has no SIGINT handler, so the kernel ignores it (as with docker);
        # a second Ctrl-C kills the container.
        time.sleep(0.3)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == (130 if init else 137)  # the container's exit status
    assert proc.stderr is not None and b"Traceback" not in proc.stderr.read()
    wait_for(lambda: not leftovers(store_dir))
    assert not list(store_dir.glob("containers/*/config.json"))  # --rm removed it


def test_detached_container_outlives_the_cli_and_stops_cleanly(store_dir, busybox_image) -> None:
    needs_root()
    cid = subprocess.run([sys.executable, "-m", "pydock", "run", "-d", "busybox", "sleep",
                          "100"], capture_output=True, text=True, check=True).stdout.strip()
    pid = running_container_pids(store_dir)[0]
    assert alive(pid)
    assert subprocess.run([sys.executable, "-m", "pydock", "rm", "-f", cid],
                          capture_output=True).returncode == 0
    wait_for(lambda: not alive(pid))
    assert not list(store_dir.glob("containers/*/config.json"))


def test_containers_live_on_tmpfs_and_leave_nothing_after_the_last_rm(
        store_dir, busybox_image) -> None:
    needs_root()
    from pydock.backends.native.backend import NativeBackend

    b = NativeBackend(store_dir)
    c = b.run("busybox", command=["true"])
    c.wait(10)
    run_dir = c.dir.path.parent.parent
    assert str(run_dir).startswith("/dev/shm/pydock-")
    assert (store_dir / "containers").resolve() == c.dir.path.parent
    c.remove()
    b.close()
    assert not run_dir.exists()


def test_what_a_client_sends_before_closing_is_done_with_its_events_unread(
        store_dir, busybox_image) -> None:
    """A client that closes with the monitor's events unread resets the connection (the
    kernel reports ECONNRESET first): the removal it sent before still happens."""
    needs_root()
    import time

    from pydock.backends.native.backend import NativeBackend

    b = NativeBackend(store_dir)
    c = b.run("busybox", command=["true"], network="none")
    deadline = time.monotonic() + 10
    while c.dir.read_state().get("status") == "running":  # its exit event stays unread
        assert time.monotonic() < deadline
        time.sleep(0.01)
    run_dir = c.dir.path.parent.parent
    c.remove()  # its files are left to the monitor
    b.close()
    assert not run_dir.exists()


def test_sweep_deletes_run_dirs_of_deleted_stores(tmp_path, busybox_tar) -> None:
    needs_root()
    import shutil

    from pydock.backends.native.backend import NativeBackend
    from pydock.models import ImageConfig
    from pydock.store import Store

    doomed = Store(tmp_path / "doomed")
    with open(busybox_tar, "rb") as f:
        doomed.import_tar(f, config=ImageConfig(cmd=("sh",)), ref="busybox")
    b = NativeBackend(doomed)
    c = b.run("busybox", command=["true"])
    c.wait(10)
    b.close()
    run_dir = c.dir.path.parent.parent
    shutil.rmtree(tmp_path / "doomed")  # e.g. pytest deleting an old tmp dir
    assert run_dir.exists()
    NativeBackend(tmp_path / "other").sweep()
    assert not run_dir.exists()


def test_leak_check_sees_container_processes(store_dir, busybox_image) -> None:
    """The leak checks of this suite must be able to fail: a running container is found."""
    needs_root()
    from pydock.backends.native.backend import NativeBackend

    b = NativeBackend(store_dir)
    c = b.run("busybox", command=["sleep", "100"])
    try:
        assert any("(in a container)" in p for p in leftovers(store_dir).get("processes", []))
    finally:
        c.remove(force=True)
        b.close()
