"""The pytest plugin, run as users run it: real pytest sessions through pytester."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import leftovers, needs_root
from dockerhelp import BOTH, docker_busybox, docker_raw, pd_backend, run, session_leftovers

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.usefixtures("no_leaks")
__all__ = ["docker_busybox", "docker_raw", "pd_backend", "run"]  # fixtures used here

@BOTH
def test_container_fixture_gives_each_test_a_fresh_container(run, store_dir) -> None:
    result = run(test_fresh="""
        import pytest

        pytestmark = pytest.mark.pydock(image="busybox", command=["sleep", "300"])

        @pytest.mark.parametrize("n", range(3))
        def test_write(container, n):
            assert container.exec("ls /data 2>/dev/null; echo x > /data").stdout == b""
            assert container.exec(["cat", "/data"]).stdout == b"x\\n"
            assert container.status == "running"
    """)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*3 containers started, median start * ms*"])
    assert not list((store_dir / "containers").glob("*/config.json"))


@BOTH
def test_run_with_readiness_and_http_probe(run) -> None:
    result = run(test_web="""
        SERVE = "mkdir /www; echo hi > /www/index.html; sleep 0.2; httpd -f -p 8080 -h /www"

        def test_served(pydock):
            with pydock.run("busybox", SERVE, ready=[pydock.port(8080),
                                                    pydock.http(8080, "/index.html")]) as c:
                assert c.exec("wget -q -O - http://127.0.0.1:8080/index.html").stdout == b"hi\\n"
                c.put("/www/extra.txt", "more")
                assert c.get("/www/extra.txt") == b"more"
    """)
    result.assert_outcomes(passed=1)


@BOTH
def test_failing_test_report_shows_its_containers(run) -> None:
    result = run(test_fail="""
        import pytest

        @pytest.mark.pydock(image="busybox",
                            command=["sh", "-c", "echo booting service; sleep 300"],
                            ready_log="booting")
        def test_breaks(container):
            assert container.exec(["false"]).exit_code == 0
    """)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*pydock container *", "image: *busybox*",
                                 "command: sh -c echo booting service; sleep 300",
                                 "status: running*", "*booting service*"])


@BOTH
def test_a_teardown_error_after_the_container_went_reports_it_as_last_seen(run) -> None:
    """Another fixture's teardown fails after the container's own teardown removed it:
    the report shows the container as it was, not an internal error."""
    result = run(test_td="""
        import pytest

        @pytest.fixture
        def broken_teardown():
            yield
            raise RuntimeError("teardown broke")

        @pytest.mark.pydock(image="busybox", command=["sh", "-c", "echo up; sleep 300"],
                            ready_log="up")
        def test_x(broken_teardown, container):
            pass
    """)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*RuntimeError: teardown broke*", "*pydock container *",
                                 "status: *; removed at teardown", "*up*"])
    assert "INTERNALERROR" not in result.stdout.str()


@BOTH
def test_wait_for_log_returns_a_later_line_and_names_a_missing_one(run) -> None:
    result = run(test_log="""
        import pytest
        from pydock.ready import NotReady

        def test_later_line(pydock):
            with pydock.run("busybox", "sleep 0.3; echo request 7 done; sleep 300") as c:
                assert c.wait_for_log(r"request \\d+ done", timeout=10) == "request 7 done"

        def test_exits_without_it(pydock):
            with pydock.run("busybox", "echo only this; exit 3") as c:
                with pytest.raises(NotReady, match="(?s)no log line matching 'never'.*only this"):
                    c.wait_for_log("never", timeout=30)

        def test_times_out(pydock):
            with pydock.run("busybox", "sleep 300") as c:
                with pytest.raises(NotReady, match=r"after 0.3 s"):
                    c.wait_for_log("never", timeout=0.3)
    """)
    result.assert_outcomes(passed=3)


@BOTH
def test_container_dying_before_ready_is_a_clear_error(run) -> None:
    result = run(test_dies="""
        import pytest

        @pytest.mark.pydock(image="busybox", command=["sh", "-c", "echo no config >&2; exit 2"],
                            ready_port=5432)
        def test_db(container):
            pass
    """)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*exited with status 2 before it was ready*",
                                 "*port 5432/tcp*", "*no config*"])
    assert "Traceback" not in result.stdout.str()


@BOTH
def test_missing_marker_and_missing_image_are_clear(run) -> None:
    result = run(test_bad="""
        import pytest

        def test_no_marker(container):
            pass

        @pytest.mark.pydock(image="no-such-image")
        def test_no_image(container):
            pass
    """)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*needs @pytest.mark.pydock(image=...)*",
                                 "*image not found: no-such-image*"])


@BOTH
def test_seed_once_fork_per_test(run) -> None:
    result = run(test_seed="""
        import pytest

        @pytest.fixture(scope="session")
        def seeded(pydock):
            with pydock.run("busybox", "mkdir -p /db && echo 'row 1' > /db/table; sleep 300") as c:
                c.exec("while [ ! -f /db/table ]; do sleep 0.01; done")
                return c.commit(changes=['CMD ["sleep", "300"]'])

        @pytest.mark.parametrize("n", range(3))
        def test_fork(pydock, seeded, n):
            with pydock.run(seeded) as c:
                assert c.exec(["cat", "/db/table"]).stdout == b"row 1\\n"
                c.exec(f"echo 'row from test {n}' >> /db/table")
                assert c.exec(["wc", "-l", "/db/table"]).stdout.split()[0] == b"2"
    """)
    result.assert_outcomes(passed=3)


@pytest.fixture
def engine(pd_backend, store_dir, request):  # type: ignore[no-untyped-def]
    """The chosen backend, for checks behind the sessions' back (containers they kept)."""
    if pd_backend == "native":
        from pydock import NativeBackend
        with NativeBackend(store_dir) as b:
            yield b
    else:
        from pydock import DockerBackend
        with DockerBackend(request.getfixturevalue("docker_raw"), session_label=None) as b:
            yield b


def kept_names(result: pytest.RunResult) -> dict[str, str]:
    """Test id -> name of the containers the summary lists as kept."""
    found = {}
    for line in result.stdout.lines:
        if line.startswith("kept "):
            name, test = line.split()[1], line.split("(", 1)[1].split(")", 1)[0]
            found[test] = name
    return found


@BOTH
def test_keep_always_lists_containers_with_a_shell_command(run, store_dir, pd_backend,
                                                           engine) -> None:
    result = run("--pydock-keep=always", test_keep="""
        import pytest

        @pytest.mark.pydock(image="busybox", command=["sleep", "300"])
        def test_one(container):
            pass
    """)
    result.assert_outcomes(passed=1)
    if pd_backend == "docker":  # README, "what differs": the shell line is docker's
        result.stdout.fnmatch_lines(["kept * (test_keep.py::test_one): docker exec -it * sh"])
        kept = engine.container(kept_names(result)["test_keep.py::test_one"])
        try:  # it outlived the session, running, and no sweep will take it
            assert kept.status.value == "running"
            assert "pydock.session" not in kept.inspect()["Config"]["Labels"]
        finally:
            kept.remove(force=True)
        return
    result.stdout.fnmatch_lines(["kept * (test_keep.py::test_one): pydock --store * exec -it * sh"])
    kept_dirs = list((store_dir / "containers").glob("*/config.json"))
    assert len(kept_dirs) == 1
    # it outlived the session, running; remove it as the user would
    out = subprocess.run([sys.executable, "-m", "pydock", "--store", str(store_dir), "ps"],
                         capture_output=True, text=True).stdout
    assert "Up" in out
    cid = kept_dirs[0].parent.name
    assert subprocess.run([sys.executable, "-m", "pydock", "--store", str(store_dir), "rm",
                           "-f", cid]).returncode == 0


@BOTH
def test_keep_failed_keeps_only_the_failed_tests_containers(run, engine) -> None:
    result = run("--pydock-keep=failed", test_keepf="""
        import pytest

        pytestmark = pytest.mark.pydock(image="busybox", command=["sleep", "300"])

        def test_passes(container):
            container.exec("echo passed > /mark")

        def test_fails(container):
            container.exec("echo failed > /mark")
            assert False
    """)
    result.assert_outcomes(passed=1, failed=1)
    kept = kept_names(result)
    assert list(kept) == ["test_keepf.py::test_fails"]
    c = engine.container(kept["test_keepf.py::test_fails"])
    try:
        assert c.status.value == "running"
        assert c.exec(["cat", "/mark"]).stdout == b"failed\n"
        others = [x for x in engine.containers(all=True) if x.id != c.id and
                  dict(x.spec.labels).get("pydock.test") == "test_keepf.py::test_passes"]
        assert others == []  # the passing test's container was removed
    finally:
        c.remove(force=True)


@BOTH
def test_published_ports_address_and_url(run) -> None:
    result = run(test_ports="""
        from urllib.request import urlopen

        SERVE = "mkdir /www; echo hi > /www/index.html; httpd -f -p 8080 -h /www"

        def test_published(pydock):
            with pydock.run("busybox", SERVE, ports=[8080],
                            ready=pydock.http(8080, "/index.html")) as c:
                host, port = c.address(8080)
                assert host == "127.0.0.1" and c.ports()["8080/tcp"] == [(host, port)]
                assert urlopen(c.url(8080, "/index.html"), timeout=5).read() == b"hi\\n"

        def test_bridge_address(pydock):
            with pydock.run("busybox", SERVE, ready=pydock.http(8080, "/index.html")) as c:
                host, port = c.address(8080)
                assert port == 8080 and host != "127.0.0.1" and c.ports() == {}
                assert urlopen(c.url(8080, "/index.html"), timeout=5).read() == b"hi\\n"

        def test_no_address_without_a_network(pydock):
            import pytest
            with pydock.run("busybox", ["sleep", "300"], network="none") as c:
                with pytest.raises(RuntimeError, match="no address the host can reach"):
                    c.address(8080)
    """)
    result.assert_outcomes(passed=3)


@BOTH
def test_hooks_for_other_plugins(run) -> None:
    result = run(conftest="""
        events = []

        def pytest_pydock_container_started(container, nodeid):
            events.append(("started", nodeid))

        def pytest_pydock_container_finished(container, nodeid, outcome):
            events.append(("finished", nodeid, outcome))

        def pytest_sessionfinish(session):
            print("EVENTS", events)
    """, test_hooks="""
        import pytest

        def test_a(pydock):
            with pydock.run("busybox", ["true"]):
                pass

        @pytest.mark.pydock(image="busybox", command=["sleep", "300"])
        def test_b(container):
            assert False
    """)
    result.assert_outcomes(passed=1, failed=1)
    assert ("EVENTS [('started', 'test_hooks.py::test_a'), "
            "('finished', 'test_hooks.py::test_a', None), "
            "('started', 'test_hooks.py::test_b'), "
            "('finished', 'test_hooks.py::test_b', 'failed')]") in result.stdout.str()


@BOTH
def test_xdist_workers_each_get_fresh_containers(run) -> None:
    pytest.importorskip("xdist")
    result = run("-n", "2", test_par="""
        import pytest

        @pytest.mark.parametrize("n", range(6))
        @pytest.mark.pydock(image="busybox", command=["sleep", "300"], name="svc")
        def test_named(container, n):
            assert container.exec("test ! -f /seen && touch /seen").exit_code == 0
    """)
    result.assert_outcomes(passed=6)


def default_sigint() -> None:
    """Ctrl-C reaches a foreground pytest with SIGINT's default action; a test run started
    in the background by a non-interactive shell inherits SIGINT *ignored* (POSIX), and so
    would the sessions these tests interrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def hanging_session(pytester: pytest.Pytester, store_dir) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    """A real pytest run whose test holds a container and hangs; returned once it runs."""
    needs_root()
    pytester.makepyfile(test_hang="""
        import pytest, time

        @pytest.mark.pydock(image="busybox", command=["sleep", "300"])
        def test_hang(container):
            print("RUNNING", flush=True)
            time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-s", f"--pydock-store={store_dir}",
                             "-p", "no:cacheprovider"], cwd=pytester.path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                            preexec_fn=default_sigint)
    assert proc.stdout is not None
    for line in proc.stdout:
        if b"RUNNING" in line:
            break
    return proc


def test_the_engine_starts_loading_when_collection_finds_container_tests(run) -> None:
    """The monitor is spawned at the end of collection (it loads while pytest goes on),
    before any fixture of the session ran; a session without such tests starts none."""
    checks = """
        import os, pytest

        def monitors():
            me, found = str(os.getpid()), []
            for p in filter(str.isdigit, os.listdir("/proc")):
                try:  # (a process may end between the listing and the reads)
                    if (open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1] == me and
                            b"pydock.backends.native.monitor" in
                            open(f"/proc/{p}/cmdline", "rb").read()):
                        found.append(p)
                except OSError:
                    pass
            return found

        @pytest.fixture(scope="session", autouse=True)
        def before_any_container():
            return monitors()
    """
    result = run(test_warm=checks + """
        def test_plain(before_any_container):
            assert len(before_any_container) == 1

        @pytest.mark.pydock(image="busybox", command=["sleep", "300"])
        def test_uses(container, before_any_container):
            assert container.status == "running"
            assert monitors() == before_any_container  # the one started ahead serves
    """)
    result.assert_outcomes(passed=2)
    result = run("-k", "plain", test_warm=checks + """
        def test_plain(before_any_container):
            assert before_any_container == []
    """)
    result.assert_outcomes(passed=1)


def test_sigkill_of_pytest_leaves_nothing(pytester, store_dir, busybox_image) -> None:
    proc = hanging_session(pytester, store_dir)
    assert leftovers(store_dir)  # a container is running
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while leftovers(store_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not leftovers(store_dir)
    # the next session's sweep deletes the test containers the killed one left
    assert list((store_dir / "containers").glob("*/config.json"))
    result = pytester.runpytest_subprocess(f"--pydock-store={store_dir}", "-p",
                                           "no:cacheprovider", "-k", "nothing_matches")
    from pydock import NativeBackend
    NativeBackend(store_dir).sweep()  # what that session (or any pydock command) runs first
    assert not list((store_dir / "containers").glob("*/config.json"))
    del result


def communicate_or_dump(proc: subprocess.Popen[bytes], timeout: float = 60) -> bytes:
    """The rest of a session's output; if it hangs, its threads' stacks (faulthandler)."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER=1: every thread's stack
        out = proc.communicate(timeout=30)[0]
        pytest.fail(f"the session did not end after SIGINT; its output:\n{out.decode()}")


def test_ctrl_c_of_pytest_leaves_nothing(pytester, store_dir, busybox_image) -> None:
    proc = hanging_session(pytester, store_dir)
    proc.send_signal(signal.SIGINT)
    out = communicate_or_dump(proc)
    assert b"KeyboardInterrupt" in out
    assert not leftovers(store_dir)
    assert not list((store_dir / "containers").glob("*/config.json"))


def test_docker_ctrl_c_and_sigkill_leave_nothing(pytester, docker_raw, docker_busybox) -> None:
    """Ctrl-C: the session removes its containers; SIGKILL: the next session's sweep does."""
    pytester.makepyfile(test_hang=f"""
        import pytest, time

        @pytest.mark.pydock(image="{docker_busybox}", command=["sleep", "300"])
        def test_hang(container):
            print("RUNNING", flush=True)
            time.sleep(300)
    """)

    def hanging() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider",
                                 "--pydock-backend=docker"], cwd=pytester.path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                                preexec_fn=default_sigint)
        assert proc.stdout is not None
        for line in proc.stdout:
            if b"RUNNING" in line:
                break
        return proc

    def ours(pid: int) -> list[str]:
        return [c["Id"] for c in docker_raw.containers(all=True, filters={"label": "pydock=1"})
                if c["Labels"].get("pydock.session", "").startswith(f"{pid}:")]

    proc = hanging()
    assert len(ours(proc.pid)) == 1
    proc.send_signal(signal.SIGINT)
    assert b"KeyboardInterrupt" in communicate_or_dump(proc)
    assert ours(proc.pid) == []

    proc = hanging()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(ours(proc.pid)) == 1  # nobody was left to remove it
    pytester.makepyfile(test_hang=f"""
        import pytest

        @pytest.mark.pydock(image="{docker_busybox}", command=["true"])
        def test_next_session(container):
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--pydock-backend=docker")
    result.assert_outcomes(passed=1)
    assert ours(proc.pid) == []
    assert session_leftovers(docker_raw) == []
