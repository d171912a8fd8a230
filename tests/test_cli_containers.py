"""The pydock CLI's container commands, run as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest
from conftest import needs_root, pydock_cli

pytestmark = [pytest.mark.usefixtures("no_leaks")]


@pytest.fixture(autouse=True)
def _root() -> None:
    needs_root()


def test_run_prints_output_and_returns_the_exit_code(busybox_image) -> None:
    r = pydock_cli("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, b"out\n", b"err\n")


def test_run_without_rm_keeps_the_container_and_its_logs(busybox_image) -> None:
    r = pydock_cli("run", "--name", "once", "busybox", "echo", "hello")
    assert r.returncode == 0
    ps = pydock_cli("ps", "-a").stdout.decode()
    assert "once" in ps and "Exited (0)" in ps
    assert pydock_cli("logs", "once").stdout == b"hello\n"
    assert pydock_cli("rm", "once").returncode == 0
    assert "once" not in pydock_cli("ps", "-a").stdout.decode()


def test_run_stdin_closed_unless_interactive(busybox_image) -> None:
    r = pydock_cli("run", "--rm", "busybox", "cat", input=b"ignored")
    assert (r.returncode, r.stdout) == (0, b"")
    r = pydock_cli("run", "--rm", "-i", "busybox", "cat", input=b"piped in")
    assert (r.returncode, r.stdout) == (0, b"piped in")


def test_detached_lifecycle_exec_logs_stop_rm(busybox_image) -> None:
    r = pydock_cli("run", "-d", "--name", "svc", "busybox", "sh", "-c",
                   "echo started; trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done")
    assert r.returncode == 0 and len(r.stdout.strip()) == 64
    assert "Up" in pydock_cli("ps").stdout.decode()
    r = pydock_cli("exec", "svc", "sh", "-c", "echo in-container; exit 3")
    assert (r.returncode, r.stdout) == (3, b"in-container\n")
    r = pydock_cli("exec", "svc", "missing-tool")
    assert r.returncode == 127 and b"executable file not found" in r.stderr
    r = pydock_cli("exec", "-i", "svc", "cat", input=b"via stdin")
    assert r.stdout == b"via stdin"
    assert pydock_cli("stop", "svc").returncode == 0
    assert pydock_cli("wait", "svc").stdout == b"0\n"
    assert pydock_cli("logs", "svc").stdout == b"started\nbye\n"
    assert pydock_cli("logs", "--tail", "1", "svc").stdout == b"bye\n"
    assert pydock_cli("rm", "svc").returncode == 0


def test_create_then_start(busybox_image) -> None:
    cid = pydock_cli("create", "busybox", "sh", "-c", "echo created-run").stdout.strip()
    assert b"Created" in pydock_cli("ps", "-a").stdout
    assert pydock_cli("start", "-a", cid.decode()).stdout == b"created-run\n"
    assert pydock_cli("rm", cid.decode()).returncode == 0


def test_kill_and_rm_force(busybox_image) -> None:
    cid = pydock_cli("run", "-d", "busybox", "sleep", "100").stdout.decode().strip()
    assert pydock_cli("rm", cid).returncode == 1  # running: refuse
    assert pydock_cli("kill", "-s", "KILL", cid).returncode == 0
    assert pydock_cli("wait", cid).stdout == b"137\n"
    assert pydock_cli("rm", "-f", cid).returncode == 0


def test_inspect_container_fields(busybox_image) -> None:
    cid = pydock_cli("create", "--name", "insp", "-e", "A=1", "-m", "64m", "--pids-limit", "20",
                     "-w", "/tmp", "busybox", "sleep", "1").stdout.decode().strip()
    doc = json.loads(pydock_cli("inspect", "insp").stdout)[0]
    assert doc["Id"] == cid and doc["Name"] == "/insp"
    assert doc["State"]["Status"] == "created"
    assert doc["Config"]["Cmd"] == ["sleep", "1"] and doc["Config"]["WorkingDir"] == "/tmp"
    assert "A=1" in doc["Config"]["Env"]
    assert doc["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert doc["HostConfig"]["PidsLimit"] == 20
    pydock_cli("rm", "insp")


def test_oom_is_reported(busybox_image) -> None:
    # tail keeps /dev/zero's endless "last line" in memory: PID 1 itself is the hog
    r = pydock_cli("run", "--rm", "-m", "16m", "busybox", "sh", "-c", "exec tail /dev/zero")
    assert r.returncode == 137
    assert b"out of memory" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["run", "--rm", "nosuchimage", "true"], b"image not found: nosuchimage"),
    (["run", "--rm", "--cpus", "0.001", "busybox", "true"], b"range of CPUs"),
    (["run", "--rm", "-u", "4294967296", "busybox", "true"], b"ids go up to"),
    (["run", "--rm", "--name", "x" * 300, "busybox", "true"], b"at most 200"),
    (["run", "--rm", "-v", "/tmp:/proc", "busybox", "true"], b"/proc is the container's own"),
    (["run", "--rm", "-v", "/tmp:/m", "-v", "/tmp:/m", "busybox", "true"],
     b"duplicate mount point: /m"),
    (["run", "--rm", "--tmpfs", "/t:uid=abc", "busybox", "true"], b"a number is needed"),
    (["run", "--rm", "-v", "/tmp:/m:bogus", "busybox", "true"], b"invalid volume option"),
    (["run", "--rm", "busybox", "nosuch"], b'exec: "nosuch": executable file not found'),
    (["run", "--rm", "-m", "lots", "busybox", "true"], b"invalid memory 'lots'"),
    (["run", "--rm", "-w", "rel", "busybox", "true"], b"needs to be an absolute path"),
    (["run", "--rm", "-v", "/nonexistent-dir:/x", "busybox", "true"], b"does not exist"),
    (["run", "--rm", "-u", "ghost", "busybox", "true"], b"unable to find user ghost"),
    (["exec", "nosuchcontainer", "true"], b"no such container: nosuchcontainer"),
    (["logs", "nosuchcontainer"], b"no such container"),
])
def test_bad_input_is_one_clear_line(busybox_image, args, message) -> None:
    r = pydock_cli(*args)
    assert r.returncode != 0
    if args[0] == "run" and b"executable file not found" not in message:
        assert r.returncode == 125  # docker run's status for "could not run it at all"
    assert message in r.stderr
    assert b"Traceback" not in r.stderr
    assert len(r.stderr.strip().split(b"\n")) == 1
    assert pydock_cli("ps", "-aq").stdout == b""  # nothing half-created is left


def test_command_not_found_exit_code_is_127(busybox_image) -> None:
    assert pydock_cli("run", "--rm", "busybox", "nosuch").returncode == 127
    assert pydock_cli("run", "--rm", "busybox", "/etc/passwd").returncode == 126


def _pty_session(argv: list[str], keys: bytes, timeout: float = 15) -> tuple[int, bytes]:
    """Run argv on a new pseudo-terminal, type ``keys``, return (exit status, screen)."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    out = b""
    deadline = time.monotonic() + timeout
    while b"# " not in out and time.monotonic() < deadline:  # the shell's prompt
        if select.select([fd], [], [], 0.5)[0]:
            out += os.read(fd, 4096)
    for line in keys.split(b"\n")[:-1]:
        os.write(fd, line + b"\n")
        time.sleep(0.3)
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            out += data
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out


def test_run_it_gives_an_interactive_shell(busybox_image) -> None:
    code, screen = _pty_session(
        [sys.executable, "-m", "pydock", "run", "--rm", "-it", "busybox", "sh"],
        b"tty; stty size; echo $((6*7)); exit 3\n")
    assert code == 3
    assert b"/dev/pts/0" in screen and b"42" in screen


def test_ctrl_c_in_run_it_goes_to_the_container(busybox_image) -> None:
    code, screen = _pty_session(
        [sys.executable, "-m", "pydock", "run", "--rm", "-it", "busybox", "sh"],
        b"sleep 100\n\x03\necho after-interrupt; exit 0\n")
    assert code == 0
    assert b"after-interrupt" in screen


def test_exec_it_into_a_running_container(busybox_image) -> None:
    cid = pydock_cli("run", "-d", "busybox", "sleep", "100").stdout.decode().strip()
    code, screen = _pty_session(
        [sys.executable, "-m", "pydock", "exec", "-it", cid, "sh"],
        b"tty; echo $((5*5)); exit 4\n")
    assert code == 4 and b"25" in screen and b"/dev/pts/" in screen
    pydock_cli("rm", "-f", cid)


def test_help_is_helpful() -> None:
    r = subprocess.run([sys.executable, "-m", "pydock", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for command in ("run", "exec", "import", "images", "commit", "cp", "ps"):
        assert command in r.stdout
    r = subprocess.run([sys.executable, "-m", "pydock", "run", "--help"], capture_output=True,
                       text=True)
    assert "--memory" in r.stdout and "--pids-limit" in r.stdout


def test_env_file_labels_cpus_hostname(busybox_image, tmp_path) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text("# comment\nA=1\n\nB=two words\nFROM_HOST\n")
    r = pydock_cli("run", "--rm", "--env-file", str(env_file), "-e", "A=override",
                   "--cpus", "0.5", "-h", "box", "busybox", "sh", "-c",
                   'echo "$A|$B|$FROM_HOST"; hostname; cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us '
                   "2>/dev/null || true",
                   env={**os.environ, "FROM_HOST": "host-value"})
    lines = r.stdout.decode().split("\n")
    assert lines[0] == "override|two words|host-value"
    assert lines[1] == "box"
    cid = pydock_cli("create", "-l", "team=qa", "--cpus", "0.5", "busybox", "true").stdout
    doc = json.loads(pydock_cli("inspect", cid.decode().strip()).stdout)[0]
    assert doc["Config"]["Labels"] == {"team": "qa"}
    assert doc["HostConfig"]["NanoCpus"] == 500_000_000
    pydock_cli("rm", cid.decode().strip())


def test_cpu_quota_is_applied(backend) -> None:
    import re

    c = backend.run("busybox", command=["sleep", "30"], cpus=0.5)
    state = json.loads(c.dir.state_file.read_text())
    cpu_dirs = [p for p in state["cgroup"]["paths"] if re.search(r"/cpu[^/]*/", p)]
    assert cpu_dirs, state["cgroup"]
    with open(f"{cpu_dirs[0]}/cpu.cfs_quota_us") as f:
        assert f.read().strip() == "50000"
    c.remove(force=True)


def test_not_root_is_a_clear_error(busybox_image) -> None:
    code = ("import os; os.geteuid = lambda: 1000\n"
            "from pydock.cli import main\nraise SystemExit(main(['run', 'busybox', 'true']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode != 0
    assert "needs root" in r.stderr and "Traceback" not in r.stderr


def test_logs_follow_streams_until_the_container_exits(busybox_image) -> None:
    cid = pydock_cli("run", "-d", "busybox", "sh", "-c",
                     "echo first; sleep 0.5; echo second; echo oops >&2").stdout.decode().strip()
    r = pydock_cli("logs", "-f", cid, timeout=20)
    # "second" comes 0.5 s after "first": -f followed the container until it exited
    assert r.stdout == b"first\nsecond\n" and r.stderr == b"oops\n"
    pydock_cli("rm", cid)


def test_docker_compatible_odds_and_ends(busybox_image, tmp_path) -> None:
    # no-limit spellings and extra volume options are accepted
    r = pydock_cli("run", "--rm", "-m", "0", "--cpus", "0", "--pids-limit", "-1",
                   "-v", f"{tmp_path}:/m:ro,z", "busybox", "sh", "-c",
                   "touch /m/x 2>&1; mount | grep ' /t '", "--tmpfs", "/t")
    # (--tmpfs after the command is part of the command: docker's argument order)
    assert r.returncode == 1 and b"Read-only" in r.stdout
    r = pydock_cli("run", "--rm", "--tmpfs", "/t", "busybox", "sh", "-c", "mount | grep ' /t '")
    assert b"noexec" in r.stdout and b"nosuid" in r.stdout and b"nodev" in r.stdout
    r = pydock_cli("run", "--rm", "--network", "host", "busybox", "hostname")
    assert r.stdout.decode().strip() == os.uname().nodename
    cid = pydock_cli("run", "-d", "busybox", "sleep", "100").stdout.decode().strip()
    r = pydock_cli("kill", "-s", "999", cid)
    assert r.returncode != 0 and b"invalid signal" in r.stderr and b"Traceback" not in r.stderr
    assert pydock_cli("stop", "-t", "-1", cid).returncode == 0  # -1: wait as long as it takes
    pydock_cli("rm", cid)


def test_wait_on_an_auto_removed_container_reports_its_status(busybox_image) -> None:
    cid = pydock_cli("run", "-d", "--rm", "busybox", "sh", "-c",
                     "sleep 0.3; exit 3").stdout.decode().strip()
    assert pydock_cli("wait", cid).stdout == b"3\n"
    assert pydock_cli("ps", "-aq").stdout == b""


def test_start_attach_shows_only_the_new_run(busybox_image) -> None:
    pydock_cli("run", "--name", "again", "busybox", "echo", "a run")
    assert pydock_cli("start", "-a", "again").stdout == b"a run\n"
    pydock_cli("rm", "again")


def test_sigkill_of_run_rm_still_removes_the_container(store_dir, busybox_image) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "pydock", "run", "--rm", "busybox",
                             "sleep", "100"])
    deadline = time.monotonic() + 10
    while not list(store_dir.glob("containers/*/state.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while list(store_dir.glob("containers/*/config.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(store_dir.glob("containers/*/config.json"))


def test_options_may_follow_positional_arguments(busybox_image) -> None:
    assert pydock_cli("run", "--name", "mix", "busybox", "sh", "-c", "echo m > /m").returncode == 0
    r = pydock_cli("commit", "mix", "-c", 'CMD ["cat", "/m"]', "mixed:1")
    assert r.returncode == 0, r.stderr
    assert pydock_cli("run", "--rm", "mixed:1").stdout == b"m\n"
    assert pydock_cli("rm", "mix").returncode == 0
    r = pydock_cli("ps", "--bogus")
    assert r.returncode == 2 and b"unrecognized arguments: --bogus" in r.stderr
    r = pydock_cli("run", "--bogus", "busybox", "true")
    assert r.returncode == 125 and b"unrecognized arguments: --bogus" in r.stderr
    r = pydock_cli("run", "--rm", "busybox", "echo", "--not-ours")  # the command's own flag
    assert r.stdout == b"--not-ours\n"


def test_detached_interactive_keeps_stdin_open(busybox_image) -> None:
    cid = pydock_cli("run", "-d", "-i", "busybox", "cat").stdout.decode().strip()
    time.sleep(0.3)
    assert json.loads(pydock_cli("inspect", cid).stdout)[0]["State"]["Running"] is True
    assert pydock_cli("rm", "-f", cid).returncode == 0


def test_cp_of_a_garbage_stream_is_a_clear_error(busybox_image) -> None:
    cid = pydock_cli("run", "-d", "busybox", "sleep", "100").stdout.decode().strip()
    r = pydock_cli("cp", "-", f"{cid}:/tmp", input=b"garbage\n")
    assert r.returncode != 0 and b"not a valid tar stream" in r.stderr
    assert b"Traceback" not in r.stderr
    pydock_cli("rm", "-f", cid)
