"""The native engine against the real kernel: isolation, limits, lifecycle, exec, logs."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from pydock.backends.base import Status
from pydock.errors import InvalidState, StartError, UsageError

pytestmark = pytest.mark.usefixtures("no_leaks")


def run(backend, *argv: str, **kw):  # type: ignore[no-untyped-def]
    """Run argv to completion; returns (exit status, stdout, stderr)."""
    c = backend.run("busybox", command=list(argv), **kw)
    try:
        status = c.wait(30)
        out, err = c.logs()
    finally:
        c.remove(force=True)
    return status, out.decode(), err.decode()


def test_zygotes_wait_at_idle_priority_and_containers_run_at_normal_priority(
        backend) -> None:
    """The zygote factory runs under SCHED_IDLE (its zygotes prepare there, out of the
    way of a start); a container's processes are back under SCHED_OTHER."""
    policies = [run(backend, "sh", "-c", "grep ^policy /proc/self/sched")[1].split()[-1]
                for _ in range(4)]  # the first may come before the factory's first zygote
    assert policies == ["0"] * 4
    monitor = backend.monitor().process.pid
    factories = [int(p) for p in os.listdir("/proc") if p.isdigit()
                 and _comm(int(p)) == "pydock-factory" and _ppid(int(p)) == monitor]
    assert len(factories) == 1
    assert os.sched_getscheduler(factories[0]) == os.SCHED_IDLE


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def test_a_monitor_started_ahead_is_taken_by_the_first_client_or_closed(
        store_dir, busybox_image) -> None:
    """The plugin starts the monitor before it imports the engine (spawn.prestart): the
    first client of that store takes it over; one nobody took exits at discard()."""
    from pydock.backends.native import spawn
    from pydock.backends.native.backend import NativeBackend

    spawn.prestart(store_dir)
    early = spawn._early[store_dir][0]
    b = NativeBackend(store_dir)
    try:
        assert run(b, "true")[0].exit_code == 0
        assert b.monitor().process is early
    finally:
        b.close()
    spawn.prestart(store_dir)
    unused = spawn._early[store_dir][0]
    spawn.discard()
    assert unused.poll() is not None and not spawn._early


def test_output_and_exit_code(backend) -> None:
    status, out, err = run(backend, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (status.exit_code, out, err) == (3, "out\n", "err\n")


def test_sees_only_its_own_processes(backend) -> None:
    _, out, _ = run(backend, "ps", "-o", "pid,comm")
    lines = out.split("\n")[1:]
    assert [line.split() for line in lines if line] == [["1", "ps"]]


def test_writes_reach_neither_image_nor_host_nor_next_container(backend, store_dir) -> None:
    status, _, _ = run(backend, "sh", "-c", "echo changed > /etc/passwd; touch /tmp/marker")
    assert status.exit_code == 0
    _, out, _ = run(backend, "sh", "-c", "head -1 /etc/passwd; ls /tmp")
    assert out == "root:x:0:0:root:/root:/bin/sh\n"
    assert not list(store_dir.glob("layers/*/tmp/marker"))
    assert not Path("/tmp/marker").exists()


def test_own_hostname(backend) -> None:
    c = backend.run("busybox", command=["hostname"])
    c.wait(10)
    assert c.logs()[0].decode().strip() == c.id[:12] != os.uname().nodename
    c.remove()
    _, out, _ = run(backend, "hostname", hostname="web")
    assert out == "web\n"


def test_docker_default_capabilities_and_no_new_privs(backend) -> None:
    _, out, _ = run(backend, "grep", "-E", "^(CapEff|CapBnd|CapInh|NoNewPrivs)", "/proc/self/status")
    fields = dict(line.split(":\t") for line in out.strip().split("\n"))
    assert fields["CapEff"] == fields["CapBnd"] == "00000000a80425fb"
    assert fields["CapInh"] == "0000000000000000"
    assert fields["NoNewPrivs"] == "1"


def test_non_root_user_has_no_effective_capabilities(backend) -> None:
    _, out, _ = run(backend, "grep", "CapEff", "/proc/self/status", user="app")
    assert out.split() == ["CapEff:", "0000000000000000"]


def test_memory_limit_kills_a_hog_and_reports_oom(backend) -> None:
    status, _, _ = run(backend, "sh", "-c", "exec tail /dev/zero", memory=32 * 1024 * 1024)
    assert status.oom_killed
    assert status.exit_code == 137


def test_pids_limit_stops_a_fork_bomb(backend) -> None:
    status, out, err = run(backend, "sh", "-c",
                           "for i in $(seq 50); do sleep 5 & done; echo survived",
                           pids_limit=8)
    assert "can't fork" in err
    assert status.exit_code != 0
    # the host is fine: we can still start processes
    assert os.system("true") == 0


def test_user_resolution_through_image_passwd_and_group(backend) -> None:
    _, out, _ = run(backend, "id", user="app")
    assert out.strip() == "uid=1000(app) gid=1000(app) groups=1000(app),2000(extra)"
    _, out, _ = run(backend, "id", user="4242")
    assert out.strip().startswith("uid=4242 gid=0(root)")
    _, out, _ = run(backend, "id", user="app:extra")
    assert out.strip() == "uid=1000(app) gid=2000(extra) groups=2000(extra)"
    with pytest.raises(StartError, match="unable to find user ghost"):
        run(backend, "id", user="ghost")


def test_environment_like_docker(backend) -> None:
    _, out, _ = run(backend, "env", env=["FOO=bar", "PATH=/bin"], hostname="h1", user="app")
    env = dict(line.split("=", 1) for line in out.strip().split("\n"))
    assert env == {"PATH": "/bin", "HOSTNAME": "h1", "FOO": "bar", "HOME": "/home/app"}


def test_working_directory_is_created(backend) -> None:
    _, out, _ = run(backend, "pwd", working_dir="/srv/app")
    assert out == "/srv/app\n"


def test_command_not_found_is_127_with_dockers_message(backend) -> None:
    with pytest.raises(StartError) as info:
        run(backend, "no-such-command")
    assert info.value.exit_code == 127
    assert 'exec: "no-such-command": executable file not found in $PATH' in str(info.value)


def test_network_none_has_only_loopback_and_it_is_up(backend) -> None:
    _, out, _ = run(backend, "cat", "/proc/net/dev", network="none")
    names = [line.split(":")[0].strip() for line in out.split("\n")[2:] if line]
    assert names == ["lo"]
    _, out, _ = run(backend, "cat", "/sys/class/net/lo/operstate", network="none")
    assert out.strip() in ("unknown", "up")


def test_network_host_shares_the_hosts_interfaces(backend) -> None:
    _, out, _ = run(backend, "cat", "/proc/net/dev", network="host")
    with open("/proc/net/dev") as f:
        host = sorted(line.split(":")[0].strip() for line in f.read().split("\n")[2:] if line)
    assert sorted(line.split(":")[0].strip() for line in out.split("\n")[2:] if line) == host


def test_minimal_dev_and_readonly_sys(backend) -> None:
    _, out, _ = run(backend, "sh", "-c", "ls /dev; touch /sys/x 2>&1; echo data > /dev/null")
    names = set(out.split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm"} <= names
    assert "Read-only file system" in out
    assert "sda" not in names and "vda" not in names


def test_bind_mounts_and_tmpfs(backend, tmp_path) -> None:
    from pydock.spec import parse_tmpfs, parse_volume

    (tmp_path / "in.txt").write_text("from host\n")
    mounts = [parse_volume(f"{tmp_path}:/data"), parse_volume(f"{tmp_path}:/ro:ro"),
              parse_tmpfs("/scratch:size=1m")]
    status, out, err = run(backend, "sh", "-c",
                           "cat /data/in.txt; echo back > /data/out.txt; touch /ro/x; "
                           "df -k /scratch | tail -1", mounts=mounts)
    assert out.startswith("from host")
    assert (tmp_path / "out.txt").read_text() == "back\n"
    assert not (tmp_path / "x").exists() and "Read-only" in err
    assert out.split("\n")[1].split()[1] == "1024"


def test_stop_sends_sigterm_then_sigkill(backend) -> None:
    c = backend.run("busybox", command=["sleep", "100"], init=True)
    c.stop(timeout=30)
    assert c.wait().exit_code == 143  # SIGTERM, forwarded by the init, ended it: no SIGKILL
    c.remove()
    # PID 1 without a handler ignores SIGTERM: stop escalates to SIGKILL
    c = backend.run("busybox", command=["sleep", "100"])
    c.stop(timeout=0.3)
    assert c.wait().exit_code == 137
    c.remove()


def test_stop_signal_is_used(backend) -> None:
    c = backend.run("busybox", command=["sh", "-c", "trap 'echo got USR1; exit 0' USR1; "
                                                    "while true; do sleep 0.05; done"],
                    stop_signal="SIGUSR1")
    time.sleep(0.3)
    c.stop(timeout=5)
    assert c.wait().exit_code == 0
    assert c.logs()[0] == b"got USR1\n"
    c.remove()


def test_init_reaps_orphaned_zombies(backend) -> None:
    c = backend.run("busybox", command=["sh", "-c", "(sleep 0.1 &) ; (sleep 0.1 &); sleep 100"],
                    init=True)
    time.sleep(0.5)
    r = c.exec(["ps", "-o", "stat,comm"])
    assert r.exit_code == 0
    assert not [line for line in r.stdout.decode().split("\n") if line.startswith("Z")]
    c.remove(force=True)


def test_containers_start_when_the_zygotes_and_their_factory_were_killed(backend) -> None:
    """The monitor's helpers dying (OOM killer, a stray kill) costs speed, never a start."""
    first = backend.run("busybox", command=["true"])
    first.wait(10)
    first.remove()
    monitor = backend.monitor().process.pid
    deadline = time.monotonic() + 10
    helpers: list[int] = []
    while len(helpers) < 3 and time.monotonic() < deadline:  # the factory, two zygotes
        helpers = [int(p) for p in os.listdir("/proc") if p.isdigit() and
                   _ppid(int(p)) == monitor]
        time.sleep(0.01)
    assert len(helpers) >= 3
    for pid in helpers:
        os.kill(pid, signal.SIGKILL)
    for pid in helpers:  # dead (a zombie until the monitor reaps it), as after an OOM kill
        while _state(pid) not in (None, "Z") and time.monotonic() < deadline + 10:
            time.sleep(0.001)
    for _ in range(3):
        c = backend.run("busybox", command=["sh", "-c", "exit 3"])
        assert c.wait(10).exit_code == 3
        c.remove()


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError):
        return None


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except OSError:
        return None


@pytest.mark.parametrize("options", [{"init": True}, {"init": False},
                                     {"init": True, "memory": 64 << 20}])
def test_container_processes_get_no_fd_but_stdio(backend, options) -> None:
    """Workloads and execs hold nothing of the monitor's or a zygote's (a waiting zygote's
    socket in a container's process would let it send that root process a plan); the
    memory limit makes the monitor clone PID 1 itself instead of taking a zygote."""
    c = backend.run("busybox", command=["sh", "-c", "ls /proc/self/fd; sleep 300"],
                    **options)
    try:
        # ls's own directory fd is 3; nothing else may be open
        assert c.exec(["ls", "/proc/self/fd"]).stdout.split() == [b"0", b"1", b"2", b"3"]
        deadline = time.monotonic() + 10
        while not c.logs()[0] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c.logs()[0].split() == [b"0", b"1", b"2", b"3"]
    finally:
        c.remove(force=True)


def test_exec_output_exit_code_env_user_workdir(backend) -> None:
    c = backend.run("busybox", command=["sleep", "100"], init=True)
    r = c.exec(["sh", "-c", "echo $FOO; id -un; pwd; echo e >&2; exit 5"], env=["FOO=x"],
               user="app", workdir="/tmp")
    assert (r.exit_code, r.stdout, r.stderr) == (5, b"x\napp\n/tmp\n", b"e\n")
    assert c.exec("cat", stdin=b"").exit_code == 0
    assert c.exec(["cat"], stdin=b"piped").stdout == b"piped"
    r = c.exec(["nope"])
    assert r.exit_code == 127 and b"executable file not found" in r.stderr
    r = c.exec(["ps", "-o", "pid,comm"])
    assert "sleep" in r.stdout.decode()
    c.remove(force=True)


def test_exec_into_stopped_container_is_an_error(backend) -> None:
    c = backend.run("busybox", command=["true"])
    c.wait(10)
    with pytest.raises(InvalidState):
        c.exec(["true"])
    c.remove()


def test_logs_readable_while_running_and_after_exit(backend) -> None:
    c = backend.run("busybox", command=["sh", "-c", "echo one; sleep 0.5; echo two"])
    deadline = time.monotonic() + 5
    while c.logs()[0] != b"one\n" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert c.logs()[0] == b"one\n"
    assert c.status is Status.RUNNING
    c.wait(10)
    assert c.logs()[0] == b"one\ntwo\n"
    assert c.status is Status.EXITED
    c.remove()


def test_lifecycle_create_start_restart_remove(backend) -> None:
    c = backend.create("busybox", command=["sh", "-c", "echo run >> /count; cat /count"])
    assert c.status is Status.CREATED
    c.start()
    c.wait(10)
    c.start()  # a stopped container starts again with its writable layer kept
    c.wait(10)
    assert c.logs()[0] == b"run\nrun\nrun\n"
    c.remove()
    assert c.id not in [x.id for x in backend.containers(all=True)]


def test_remove_running_needs_force(backend) -> None:
    c = backend.run("busybox", command=["sleep", "100"])
    with pytest.raises(InvalidState, match="stop it first"):
        c.remove()
    c.remove(force=True)
    assert not c.dir.path.exists()


def test_bad_options_are_clear_errors(backend) -> None:
    with pytest.raises(UsageError, match="absolute path"):
        backend.create("busybox", command=["true"], working_dir="relative")
    with pytest.raises(UsageError, match="minimum memory"):
        backend.create("busybox", command=["true"], memory=1024)
    with pytest.raises(UsageError, match="unknown network"):
        backend.create("busybox", command=["true"], network="bridge0")
    assert backend.containers(all=True) == []


def test_container_name_conflict(backend) -> None:
    from pydock.errors import NameConflict

    c = backend.create("busybox", command=["true"], name="db")
    with pytest.raises(NameConflict, match="already in use"):
        backend.create("busybox", command=["true"], name="db")
    assert backend.container("db").id == c.id
    c.remove()
    backend.create("busybox", command=["true"], name="db").remove()


def test_many_containers_from_one_image_in_parallel(backend) -> None:
    cs = [backend.run("busybox", command=["sh", "-c", f"echo {i} > /id; sleep 0.3; cat /id"])
          for i in range(5)]
    assert [c.wait(10).exit_code for c in cs] == [0] * 5
    assert [c.logs()[0] for c in cs] == [f"{i}\n".encode() for i in range(5)]
    for c in cs:
        c.remove()


def test_restart_then_wait_reports_the_new_run(backend) -> None:
    c = backend.run("busybox", command=["sh", "-c", "test -f /again && exit 5; touch /again"])
    assert c.wait(10).exit_code == 0
    c.start()
    assert c.wait(10).exit_code == 5
    assert c.status is Status.EXITED
    c.remove()


def test_containers_on_disk_mode(store_dir, busybox_image, monkeypatch) -> None:
    from pydock.backends.native.backend import NativeBackend

    monkeypatch.setenv("PYDOCK_CONTAINERS", "disk")
    other = store_dir.parent / "disk-store"
    import shutil

    shutil.copytree(store_dir, other, symlinks=True)
    if (other / "containers").is_symlink():
        (other / "containers").unlink()
        (other / "containers").mkdir()
    b = NativeBackend(other)
    try:
        c = b.run("busybox", command=["sh", "-c", "echo on-disk > /f; cat /f"])
        assert c.wait(10).exit_code == 0
        assert c.logs()[0] == b"on-disk\n"
        assert str(c.dir.path).startswith(str(other / "containers"))
        c.remove()
    finally:
        b.close()


def test_a_root_container_cannot_open_host_devices_it_creates(backend) -> None:
    # Docker keeps CAP_MKNOD; its device cgroup refuses the open.  Here every mount is nodev.
    _, out, err = run(backend, "sh", "-c",
                      "mknod /dev/k c 10 232 && echo made; mknod /tmp/k c 1 1 && echo made2; "
                      "(exec 3</dev/k) && echo OPENED; (exec 4</tmp/k) && echo OPENED2; "
                      "head -c 3 /dev/zero | wc -c")
    assert "made" in out and "OPENED" not in out
    assert out.strip().endswith("3")  # the allowed devices still work
    assert "Permission denied" in err or "not permitted" in err


def test_the_monitors_view_of_a_spec_reads_what_the_spec_says() -> None:
    """The monitor reads a spec through state.LaunchSpec, not ContainerSpec: for a spec
    with no field at its default, written to config.json and read back, it sees the same
    values under the same names."""
    import json

    from pydock.backends.native.state import LaunchSpec, MountDoc, spec_to_json
    from pydock.models import ContainerSpec, Mount

    spec = ContainerSpec(
        image_id="sha256:" + "a" * 64, image_name="x", argv=("sh", "-c", "true"),
        env=("A=1",), working_dir="/w", user="app", hostname="h",
        mounts=(Mount(target="/t", kind="tmpfs", options="size=1m", readonly=True),
                Mount(target="/b", source="/src")),
        network="none", extra_hosts=(("db", "10.0.0.1"),), init=True, tty=True,
        stdin_open=True, auto_remove=True, memory=1 << 20, pids_limit=9, cpus=0.5)
    view = LaunchSpec(json.loads(json.dumps(spec_to_json(spec))))

    def plain(value: object) -> object:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, (Mount, MountDoc)):
            return {k: getattr(value, k) for k in MountDoc.__slots__}
        return value

    for name in LaunchSpec.__slots__:
        assert plain(getattr(view, name)) == plain(getattr(spec, name)), name


def test_init_runs_with_the_workloads_identity_and_hides_host_paths(backend, store_dir) -> None:
    _, out, _ = run(backend, "sh", "-c", "grep -E 'CapEff|NoNewPrivs|^Uid' /proc/1/status; "
                    "tr '\\0' ' ' < /proc/1/cmdline", init=True, user="app")
    fields = dict(line.split(":", 1) for line in out.strip().split("\n")[:3])
    assert fields["CapEff"].strip() == "0000000000000000"
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Uid"].split()[0] == "1000"
    assert str(store_dir) not in out and "python" not in out


def test_the_init_shows_the_container_neither_host_paths_nor_the_hosts_environment(
        backend, store_dir) -> None:
    """PID 1 for --init is a copy of a pydock process: its command line and environment
    (readable by a root workload in /proc/1) are wiped before the workload starts."""
    _, out, _ = run(backend, "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; "
                    "tr '\\0' '\\n' < /proc/1/environ", init=True)
    assert out.split()[0] == "pydock-init"
    assert str(store_dir) not in out and "PYTHONPATH" not in out and "PATH=" not in out


def test_mount_targets_resolve_symlinks_inside_the_container(backend, tmp_path) -> None:
    from pydock.spec import parse_tmpfs, parse_volume

    c = backend.run("busybox", command=["sh", "-c", "mkdir /run; ln -s /run /var/run; "
                                                    "ln -s ../../etc /home/app/up"])
    c.wait(10)
    from pydock.backends.native import rootfs
    image = rootfs.commit(c, ref="linked:1")
    c.remove()
    (tmp_path / "f").write_text("vol\n")
    c = backend.run(image.id, command=["sh", "-c", "cat /run/vol/f; mount | grep -c ' /run/t '; "
                                                   "ls /etc/pydock-escape 2>&1"],
                    mounts=[parse_volume(f"{tmp_path}:/var/run/vol"), parse_tmpfs("/var/run/t"),
                            parse_tmpfs("/home/app/up/../../../../pydock-escape")])
    c.wait(10)
    out = c.logs()[0].decode()
    c.remove()
    assert out.split("\n")[:2] == ["vol", "1"]
    assert not os.path.exists("/pydock-escape") and not os.path.exists("/etc/pydock-escape")


def test_the_monitor_keeps_its_bytecode_under_the_store_where_none_may_be_written(
        monkeypatch, tmp_path) -> None:
    """With PYTHONDONTWRITEBYTECODE the monitor, which starts in every session, would
    compile its modules every time: it caches them under the store instead."""
    from pydock.backends.native.spawn import monitor_env as _monitor_env
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.delenv("PYTHONPYCACHEPREFIX", raising=False)
    env = _monitor_env(tmp_path)
    assert "PYTHONDONTWRITEBYTECODE" not in env
    assert env["PYTHONPYCACHEPREFIX"] == str(tmp_path / "runtime" / "pycache")
    monkeypatch.setenv("PYTHONPYCACHEPREFIX", "/elsewhere")  # the user's choice stands
    env = _monitor_env(tmp_path)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONPYCACHEPREFIX"] == "/elsewhere"
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE")
    monkeypatch.delenv("PYTHONPYCACHEPREFIX")
    assert "PYTHONPYCACHEPREFIX" not in _monitor_env(tmp_path)
