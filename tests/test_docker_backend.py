"""The docker backend against a real Docker daemon: lifecycle, exec, logs, files, commit,
limits, labels and the sweep of dead sessions, errors in pydock's tree."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dockerhelp import docker_busybox, docker_raw, session_leftovers
from pydock import (
    ContainerNotFound,
    EngineUnavailable,
    ImageNotFound,
    InvalidState,
    NameConflict,
    StartError,
    Status,
    UsageError,
)

__all__ = ["docker_busybox", "docker_raw"]  # fixtures used here


@pytest.fixture
def docker(docker_raw: Any, docker_busybox: str):  # type: ignore[no-untyped-def]
    """A DockerBackend of this test process; its containers are gone after the test."""
    from pydock import DockerBackend

    b = DockerBackend(docker_raw)
    yield b
    b.close()
    label = f"pydock.session={b.session_label}"
    assert docker_raw.containers(all=True, filters={"label": label}) == []


def run(docker: Any, image: str, *argv: str, **kw: Any) -> tuple[Any, str, str]:
    """Run argv to completion; returns (exit status, stdout, stderr)."""
    c = docker.run(image, command=list(argv), **kw)
    try:
        status = c.wait(60)
        out, err = c.logs()
    finally:
        c.remove(force=True)
    return status, out.decode(), err.decode()


def test_output_exit_code_and_lifecycle(docker, docker_busybox) -> None:
    c = docker.create(docker_busybox, command=["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert c.status is Status.CREATED
    with pytest.raises(InvalidState, match="has not been started"):
        c.wait(1)
    c.start()
    status = c.wait(60)
    assert (status.exit_code, status.oom_killed) == (3, False)
    assert c.logs() == (b"out\n", b"err\n")
    assert c.status is Status.EXITED
    assert c.spec.argv == ("sh", "-c", "echo out; echo err >&2; exit 3")
    assert c.inspect()["Config"]["Labels"]["pydock"] == "1"
    c.remove()
    with pytest.raises(ContainerNotFound):
        docker.container(c.id)


def test_exec_output_exit_code_env_user_workdir_stdin(docker, docker_busybox) -> None:
    c = docker.run(docker_busybox, command=["sleep", "300"], init=True)
    r = c.exec(["sh", "-c", "cat; echo $FOO; id -u; pwd; echo oops >&2; exit 4"],
               env=["FOO=bar"], user="app", workdir="/tmp", stdin=b"fed\n")
    assert (r.exit_code, r.stdout, r.stderr) == (4, b"fed\nbar\n1000\n/tmp\n", b"oops\n")
    missing = c.exec(["no-such-tool"])
    assert missing.exit_code == 127
    assert b"executable file not found" in missing.stderr
    with pytest.raises(TimeoutError):
        c.exec(["sleep", "5"], timeout=0.5)
    c.stop(timeout=30)
    assert c.wait().exit_code == 143  # SIGTERM forwarded by the init
    with pytest.raises(InvalidState, match="is not running"):
        c.exec(["true"])
    with pytest.raises(InvalidState, match="not running"):
        c.kill()


def test_stop_escalates_and_kill_sends_signals(docker, docker_busybox) -> None:
    c = docker.run(docker_busybox, command=["sleep", "100"])  # PID 1 ignores SIGTERM
    c.stop(timeout=1)
    assert c.wait().exit_code == 137
    c.remove()
    c = docker.run(docker_busybox, command=["sleep", "100"], init=True)
    c.kill("SIGUSR1")  # forwarded by the init; sleep's default action for SIGUSR1: die
    assert c.wait(30).exit_code == 138
    with pytest.raises(UsageError, match="invalid signal"):
        c.kill("SIGNOPE")


def test_remove_running_needs_force_and_background_removal_frees_the_name(
        docker, docker_raw, docker_busybox) -> None:
    c = docker.run(docker_busybox, command=["sleep", "300"], name="pydock-t-bg")
    with pytest.raises(InvalidState, match="stop it first"):
        c.remove()
    c.remove(force=True, background=True)
    # the name is free at once, the container goes away in the background
    d = docker.create(docker_busybox, command=["true"], name="pydock-t-bg")
    with pytest.raises(NameConflict, match="already in use"):
        docker.create(docker_busybox, command=["true"], name="pydock-t-bg")
    d.remove()
    docker.close()  # waits for the background removal
    assert not docker_raw.containers(all=True, filters={"id": c.id})


def test_files_in_and_out_and_commit(docker, docker_raw, docker_busybox) -> None:
    c = docker.run(docker_busybox, command=["sleep", "300"])
    c.put_file("/tmp/data.txt", b"one\ntwo\n", mode=0o600)
    assert c.exec("wc -l < /tmp/data.txt; stat -c %a /tmp/data.txt").stdout == b"2\n600\n"
    c.exec("ln -s /tmp/data.txt /tmp/link")
    assert c.get_file("/tmp/link") == b"one\ntwo\n"
    from pydock import ContainerError
    with pytest.raises(ContainerError, match="no such file /nope"):
        c.get_file("/nope")
    with pytest.raises(ContainerError, match="no directory /no/dir"):
        c.put_file("/no/dir/f", b"")
    image = c.commit(changes=['CMD ["cat", "/tmp/data.txt"]'])
    assert image.config.cmd == ("cat", "/tmp/data.txt")
    status, out, _ = run(docker, image.id)
    assert (status.exit_code, out) == (0, "one\ntwo\n")
    named = c.commit(f"pydock-test/committed:s{c.id[:8]}")
    assert named.tags == (f"pydock-test/committed:s{c.id[:8]}",)
    docker.remove_image(named.tags[0])
    docker.close()  # the unnamed commit is removed with the session
    with pytest.raises(ImageNotFound):
        docker.image(image.id)


def test_memory_limit_oom_is_reported(docker, docker_busybox) -> None:
    status, _, _ = run(docker, docker_busybox, "sh", "-c", "exec tail /dev/zero",
                       memory=32 * 1024 * 1024)
    assert status.oom_killed
    assert status.exit_code == 137


def test_limits_env_user_workdir_reach_the_engine(docker, docker_busybox) -> None:
    status, out, _ = run(docker, docker_busybox, "sh", "-c", "id; pwd; echo $FOO",
                         env=["FOO=bar"], user="app", working_dir="/srv/app",
                         pids_limit=32, cpus=0.5, memory=64 * 1024 * 1024, hostname="h1")
    assert out.split("\n")[1:3] == ["/srv/app", "bar"]
    assert out.startswith("uid=1000(app) gid=1000(app)")
    c = docker.create(docker_busybox, command=["true"], pids_limit=32, cpus=0.5,
                      memory=64 * 1024 * 1024, init=True, stop_signal="SIGUSR2",
                      stop_timeout=3)
    host, cfg = c.inspect()["HostConfig"], c.inspect()["Config"]
    assert (host["PidsLimit"], host["NanoCpus"], host["Memory"], host["MemorySwap"],
            host["Init"]) == (32, 500_000_000, 64 << 20, 64 << 20, True)
    assert (cfg["StopSignal"], cfg["StopTimeout"]) == ("SIGUSR2", 3)
    assert (c.spec.memory, c.spec.pids_limit, c.spec.cpus) == (64 << 20, 32, 0.5)


def test_bind_mounts_and_tmpfs(docker, docker_busybox, tmp_path) -> None:
    from pydock.spec import parse_tmpfs, parse_volume

    (tmp_path / "in.txt").write_text("from host\n")
    mounts = [parse_volume(f"{tmp_path}:/data"), parse_volume(f"{tmp_path}:/ro:ro"),
              parse_tmpfs("/scratch:size=1m")]
    status, out, err = run(docker, docker_busybox, "sh", "-c",
                           "cat /data/in.txt; echo back > /data/out.txt; touch /ro/x; "
                           "df -k /scratch | tail -1", mounts=mounts)
    assert out.startswith("from host")
    assert (tmp_path / "out.txt").read_text() == "back\n"
    assert not (tmp_path / "x").exists() and "Read-only" in err
    assert out.split("\n")[1].split()[1] == "1024"


def test_readiness_probes_from_inside(docker, docker_busybox) -> None:
    from pydock.ready import HttpProbe, LogProbe, NotReady, PortProbe, wait_ready

    c = docker.run(docker_busybox, command=[
        "sh", "-c", "mkdir /www; echo hi > /www/index.html; echo starting; sleep 0.3; "
                    "httpd -f -p 8080 -h /www"])
    wait_ready(c, [LogProbe("starting"), PortProbe(8080), HttpProbe(8080, "/index.html")],
               timeout=30)
    assert ("tcp", 8080) in c.listening_ports()
    dying = docker.run(docker_busybox, command=["sh", "-c", "echo no config >&2; exit 2"])
    with pytest.raises(NotReady, match="exited with status 2 before it was ready"):
        wait_ready(dying, [PortProbe(5432)], timeout=30)


def test_port_probe_through_exec_when_the_netns_is_out_of_reach(
        docker, docker_busybox, monkeypatch) -> None:
    """A remote daemon's containers: the socket table comes from an exec of cat."""
    from pydock.backends.docker.client import Endpoint

    c = docker.run(docker_busybox, command=["nc", "-l", "-p", "7000"])
    monkeypatch.setattr(docker, "endpoint", Endpoint("tcp://example.invalid:2375"))
    assert c.pid == 0
    from pydock.ready import PortProbe, wait_ready
    wait_ready(c, [PortProbe(7000)], timeout=30)
    with pytest.raises(UsageError, match="need the Docker daemon on this machine"):
        c.netns_pid()


def test_labels_close_and_sweep_of_dead_sessions(docker, docker_raw, docker_busybox) -> None:
    from pydock import DockerBackend

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = docker.create(docker_busybox, command=["sleep", "300"],
                         labels={"pydock.session": f"{gone.pid}:1"})
    dead.start()
    mine = docker.create(docker_busybox, command=["sleep", "300"])
    assert mine.inspect()["Config"]["Labels"]["pydock.session"] == docker.session_label
    foreign = docker_raw.create_container(docker_busybox, ["true"],
                                          labels={"pydock.session": f"{gone.pid}:1"})
    try:
        assert dead.id in DockerBackend(docker_raw).sweep()
        with pytest.raises(ContainerNotFound):
            docker.container(dead.id)
        assert docker.container(mine.id).status is Status.CREATED  # alive session: kept
        assert docker_raw.inspect_container(foreign["Id"])  # not ours (no pydock=1): kept
        with pytest.raises(ContainerNotFound):
            docker.container(foreign["Id"])
        kept = DockerBackend(docker_raw, session_label=None).create(
            docker_busybox, command=["true"])
        docker.close()
        assert not docker_raw.containers(all=True, filters={"id": mine.id})
        assert docker.container(kept.id).status is Status.CREATED  # no session label
        kept.remove()
    finally:
        docker_raw.remove_container(foreign["Id"], force=True)
    assert session_leftovers(docker_raw) == []


def test_close_tries_again_a_removal_the_daemon_failed(docker, docker_raw,
                                                      docker_busybox) -> None:
    """A removal the daemon fails at close (say, a kill it gave up waiting for under
    load) is tried again: nothing of the session is left."""
    c = docker.run(docker_busybox, command=["sleep", "300"])
    real, calls = docker.api.remove_container, []

    def flaky(*args: Any, **kw: Any) -> Any:
        calls.append(args)
        if len(calls) <= 2:  # the background removal and close's first try
            raise RuntimeError("tried to kill container, but did not receive an exit event")
        return real(*args, **kw)

    docker.api.remove_container = flaky
    c.remove(force=True, background=True)
    docker.close()
    assert len(calls) == 3
    assert not docker_raw.containers(all=True, filters={"id": c.id})


def test_errors_are_pydocks(docker, docker_busybox) -> None:
    with pytest.raises(ImageNotFound, match="image not found: pydock-test/no-such-image"):
        docker.create("pydock-test/no-such-image:1", command=["true"])
    with pytest.raises(ContainerNotFound, match="no such container: pydock-no-such-ctr"):
        docker.container("pydock-no-such-ctr")
    with pytest.raises(StartError) as info:
        run(docker, docker_busybox, "no-such-command")
    assert info.value.exit_code == 127
    assert "executable file not found" in str(info.value)
    with pytest.raises(UsageError, match="absolute path"):
        docker.create(docker_busybox, command=["true"], working_dir="relative")
    with pytest.raises(UsageError, match="minimum memory"):
        docker.create(docker_busybox, command=["true"], memory=1024)
    with pytest.raises(UsageError, match="unknown container option.*colour"):
        docker.create(docker_busybox, command=["true"], colour="red")
    with pytest.raises(StartError, match="network pydock-no-such-net not found"):
        docker.run(docker_busybox, command=["true"], network="pydock-no-such-net")
    assert docker.containers(all=True) == []


def test_unreachable_daemon_and_docker_contexts(tmp_path, monkeypatch) -> None:
    pytest.importorskip("docker")
    from pydock import DockerBackend
    from pydock.backends.docker.client import resolve_endpoint

    with pytest.raises(EngineUnavailable, match="no Docker daemon at unix:///nonexistent"):
        DockerBackend(base_url=f"unix:///nonexistent/{tmp_path.name}.sock")
    assert resolve_endpoint(environ={"DOCKER_HOST": "tcp://127.0.0.1:1"}).source == \
        "DOCKER_HOST"
    # the current docker context (config.json currentContext), as the docker CLI reads it
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "pydock-ctx"}))
    meta = tmp_path / "contexts" / "meta" / hashlib.sha256(b"pydock-ctx").hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({
        "Name": "pydock-ctx", "Metadata": {},
        "Endpoints": {"docker": {"Host": "tcp://127.0.0.1:1", "SkipTLSVerify": False}}}))
    endpoint = resolve_endpoint(environ={})
    assert (endpoint.base_url, endpoint.source, endpoint.local) == \
        ("tcp://127.0.0.1:1", "context pydock-ctx", False)
    with pytest.raises(EngineUnavailable, match=r"tcp://127.0.0.1:1 \(context pydock-ctx\)"):
        DockerBackend(base_url=None)
    with pytest.raises(EngineUnavailable, match="context 'gone' does not exist"):
        resolve_endpoint(environ={"DOCKER_CONTEXT": "gone"})


def test_import_gives_the_same_image_for_the_same_tarball(docker, busybox_tar: Path) -> None:
    from pydock import ImageConfig

    config = ImageConfig(cmd=("sh",), env=("LANG=C.UTF-8", "Q=a \"b\" $c"),
                         working_dir="/tmp", labels=(("k", "v w"),))
    ref = f"pydock-test/imported:s{id(config)}"
    try:
        with open(busybox_tar, "rb") as f:
            first = docker.import_tar(f, config=config, ref=ref)
        with open(busybox_tar, "rb") as f:
            again = docker.import_tar(f, config=config, ref=ref)
        assert again.id == first.id
        assert first.config == config
        status, out, _ = run(docker, ref, "sh", "-c", "pwd; echo $Q")
        assert out == '/tmp\na "b" $c\n'
        with open(busybox_tar, "rb") as f, \
                pytest.raises(UsageError, match="cannot import an image with STOPSIGNAL"):
            docker.import_tar(f, config=ImageConfig(stop_signal="INT"))
    finally:
        docker.remove_image(ref)


def test_build_on_the_daemon_with_args_target_and_dockerignore(
        docker, docker_busybox, tmp_path) -> None:
    from pydock import BuildError

    (tmp_path / "Dockerfile.test").write_text(
        "ARG BASE\n"
        "FROM $BASE AS base\n"
        "ARG GREETING=hi\n"
        "RUN echo \"$GREETING\" > /greeting\n"
        "COPY . /ctx/\n"
        "FROM base AS broken\n"
        "RUN echo failing; exit 3\n")
    (tmp_path / ".dockerignore").write_text("secret.txt\n")
    (tmp_path / "kept.txt").write_text("kept\n")
    (tmp_path / "secret.txt").write_text("secret\n")
    tag = f"pydock-test/built:s{tmp_path.name[-8:].lower().replace('_', '-')}"
    args = {"BASE": docker_busybox, "GREETING": "hello"}
    image = docker.build(tmp_path, dockerfile="Dockerfile.test", target="base",
                         build_args=args, tag=tag)
    try:
        assert tag in image.tags
        _, out, _ = run(docker, tag, "sh", "-c", "cat /greeting; ls /ctx")
        assert out.split() == ["hello", "Dockerfile.test", "kept.txt"]
        with pytest.raises(BuildError, match="echo failing; exit 3") as info:
            docker.build(tmp_path, dockerfile="Dockerfile.test", build_args=args)
        assert info.value.step_exit_code == 3
        assert (info.value.line, info.value.instruction) == (7, "RUN")  # as the native one
        assert str(info.value).startswith(f"{tmp_path / 'Dockerfile.test'}:7: RUN: ")
        assert info.value.output.splitlines() == ["failing"]  # that step's output only
    finally:
        docker.remove_image(tag)


def test_cli_container_commands_with_the_docker_backend(docker_raw, docker_busybox) -> None:
    from conftest import pydock_cli

    def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return pydock_cli("--backend", "docker", *args, input=stdin)

    r = cli("run", "--rm", docker_busybox, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, b"out\n", b"err\n")
    cid = cli("run", "-d", "--name", "pydock-cli-t", docker_busybox, "sleep", "300"
              ).stdout.decode().strip()
    try:
        assert docker_raw.inspect_container(cid)["Config"]["Labels"]["pydock"] == "1"
        assert "pydock.session" not in docker_raw.inspect_container(cid)["Config"]["Labels"]
        ps = cli("ps").stdout.decode()
        assert "pydock-cli-t" in ps and "Up" in ps and '"sleep 300"' in ps
        r = cli("exec", "-i", "pydock-cli-t", "sh", "-c", "cat; exit 5", stdin=b"piped")
        assert (r.returncode, r.stdout) == (5, b"piped")
        assert cli("exec", "pydock-cli-t", "no-such-tool").returncode == 127
        assert json.loads(cli("inspect", "pydock-cli-t").stdout)[0]["Id"] == cid
        assert cli("kill", "-s", "KILL", "pydock-cli-t").returncode == 0
        assert cli("wait", "pydock-cli-t").stdout == b"137\n"
        assert cli("logs", "pydock-cli-t").returncode == 0
        r = cli("images")
        assert r.returncode == 2 and b"native backend only" in r.stderr
        r = cli("run", "pydock-test/no-such-image:1", "true")
        assert r.returncode == 125 and b"image not found" in r.stderr
        assert b"Traceback" not in r.stderr
    finally:
        assert cli("rm", "-f", "pydock-cli-t").returncode == 0
    assert not docker_raw.containers(all=True, filters={"id": cid})
