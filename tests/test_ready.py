"""Readiness probes against real containers: checked inside, no tools needed in the image."""

from __future__ import annotations

import pytest
from pydock.errors import InvalidState
from pydock.ready import ExecProbe, HttpProbe, LogProbe, NotReady, PortProbe, wait_ready

pytestmark = pytest.mark.usefixtures("no_leaks")

SERVE = "mkdir -p /www && echo hello > /www/index.html && sleep 0.3 && exec httpd -f -p 8080 -h /www"


def test_port_and_http_probes_see_a_server_inside_the_namespace(backend) -> None:
    c = backend.run("busybox", command=["sh", "-c", SERVE])
    assert not PortProbe(8080).check(c)  # not yet: httpd starts after 0.3 s
    wait_ready(c, [PortProbe(8080), HttpProbe(8080, "/index.html")], timeout=10)
    assert PortProbe(8080).check(c)
    assert not PortProbe(8081).check(c)
    assert HttpProbe(8080, "/missing", status=404).check(c)
    c.remove(force=True)


def test_log_and_exec_probes(backend) -> None:
    c = backend.run("busybox", command=["sh", "-c",
                                        "sleep 0.2; touch /tmp/up; echo 'server ready'; sleep 100"])
    wait_ready(c, [LogProbe(r"server \w+"), ExecProbe(("test", "-f", "/tmp/up"))], timeout=10)
    assert LogProbe("ready").check(c) and not LogProbe("^nope$").check(c)
    c.remove(force=True)


def test_a_container_that_dies_fails_at_once_with_its_logs(backend) -> None:
    c = backend.run("busybox", command=["sh", "-c", "echo 'cannot open database'; exit 3"])
    with pytest.raises(NotReady) as info:
        wait_ready(c, [PortProbe(5432)], timeout=60)
    assert "exited with status 3" in str(info.value)
    assert "cannot open database" in str(info.value)
    assert "port 5432/tcp listening" in str(info.value)
    c.remove()


def test_timeout_names_the_missing_probe(backend) -> None:
    c = backend.run("busybox", command=["sh", "-c", "echo starting; sleep 100"])
    with pytest.raises(NotReady) as info:
        wait_ready(c, [PortProbe(9999)], timeout=0.3)
    assert "not ready after 0.3 s" in str(info.value) and "starting" in str(info.value)
    c.remove(force=True)


class _GoneBetweenChecks:
    """A probe whose container exits while it checks (the race a fast-dying service hits)."""

    def check(self, container) -> bool:  # type: ignore[no-untyped-def]
        container.wait(10)
        raise InvalidState(f"container {container.name} is not running")

    def describe(self) -> str:
        return "a probe that needs the running container"


def test_a_container_that_dies_during_a_check_fails_with_its_exit(backend) -> None:
    c = backend.run("busybox", command=["sh", "-c", "sleep 0.2; echo bye >&2; exit 3"])
    try:
        with pytest.raises(NotReady, match="exited with status 3 before it was ready"):
            wait_ready(c, [_GoneBetweenChecks()], timeout=10)
    finally:
        c.remove(force=True)
