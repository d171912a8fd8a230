"""Published ports and network faults of real containers: the Python API, the CLI, the
plugin and the docker backend; nothing left behind (rules, leases, delay processes)."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_root, pydock_cli
from dockerhelp import docker_busybox, docker_raw, pd_backend, run
from nethelp import rtt, udp_ask
from pydock import host_image
from pydock.backends.native.network import addresses
from pydock.backends.native.network_ipam import peek
from pydock.errors import InvalidState, PortAllocated, UsageError
from pydock.models import ImageConfig
from pydock.ready import LogProbe, PortProbe, wait_ready
from pydock.store import Store

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.usefixtures("no_leaks")
__all__ = ["docker_busybox", "docker_raw", "pd_backend", "run"]  # fixtures used here

HTTPD = ["httpd", "-f", "-p", "80", "-h", "/etc"]
# A UDP echo (and a TCP one telling the peer's address) in a container of pydock:host.
ECHO = textwrap.dedent("""
    import socket, threading
    def tcp():
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 7)); s.listen(16)
        while True:
            c, addr = s.accept(); c.recv(100)
            c.sendall(b"tcp from " + addr[0].encode()); c.close()
    threading.Thread(target=tcp, daemon=True).start()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 7))
    print("ready", flush=True)
    while True:
        data, addr = u.recvfrom(2048); u.sendto(data, addr)
""")


# -- helpers -------------------------------------------------------------------------------


def http_get(host: str, port: int, path: str = "/passwd") -> bytes:
    """One HTTP/1.0 GET; retries a connect a fresh veth may drop (facts.md)."""
    for attempt in range(5):
        try:
            with socket.create_connection((host, port), timeout=3) as s:
                s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
                return b"".join(iter(lambda: s.recv(65536), b""))
        except TimeoutError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def answered(addr: tuple[str, int], count: int = 200) -> int:
    """How many of ``count`` UDP probes, sent 1 ms apart, get an echo (within 2 s)."""
    got: set[bytes] = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.settimeout(0.001)

        def receive() -> None:
            try:
                got.add(s.recv(100))
            except TimeoutError:
                pass
        for i in range(count):
            s.sendto(str(i).encode(), addr)
            receive()
        deadline = time.monotonic() + 2
        while len(got) < count and time.monotonic() < deadline:
            receive()
    return len(got)


def rules_of(cid: str) -> list[str]:
    """The DNAT rules (comments) of container ``cid`` in table ip pydock, as nft lists them."""
    out = subprocess.run(["nft", "-j", "list", "table", "ip", "pydock"], capture_output=True,
                         text=True)
    if out.returncode != 0:
        return []
    return [item["rule"].get("comment", "") for item in json.loads(out.stdout)["nftables"]
            if "rule" in item and cid in item["rule"].get("comment", "")]


def leases_of(cid: str) -> list[str]:
    return [lease.ip for lease in peek().live_leases() if lease.cid == cid]


def delay_processes(owner: str) -> list[int]:
    """PIDs of pydock-delay processes whose command line names ``owner``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "pydock-delay":
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if owner.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def eventually(check: Any, what: str, timeout: float = 10.0) -> None:
    """Poll ``check()`` until true (things a monitor or a process does asynchronously)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not the case after {timeout} s: {what}")
        time.sleep(0.05)


@pytest.fixture
def echo_image(store_dir: Path, busybox_image: str) -> str:
    """pydock:host (the host's Python) for the echo servers."""
    return host_image(Store(store_dir)).tags[0]


def start_echo(backend: Any, image: str, **kw: Any) -> Any:
    c = backend.run(image, command=["python3", "-c", ECHO], **kw)
    wait_ready(c, [LogProbe("ready"), PortProbe(7)])
    return c


# -- the Python API ---------------------------------------------------------------------------


def test_published_tcp_port_reaches_the_service(backend) -> None:
    c = backend.run("busybox", command=HTTPD, ports=["80"])
    try:
        wait_ready(c, [PortProbe(80)])
        ((host, port),) = c.ports()["80/tcp"]
        assert host == "127.0.0.1" and port > 1024      # -p 80: a free port of 127.0.0.1
        assert http_get(host, port).startswith(b"HTTP/1.1 200 OK")
        assert b"root:x:0:0" in http_get(host, port)
        doc = c.inspect()
        assert doc["NetworkSettings"]["Ports"] == {
            "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
        assert doc["HostConfig"]["PortBindings"] == {
            "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
        assert doc["Config"]["ExposedPorts"] == {"80/tcp": {}}
        assert len(rules_of(c.id)) == 2                  # output DNAT + masquerade
    finally:
        c.remove(force=True)
    assert rules_of(c.id) == []
    with pytest.raises(ConnectionRefusedError):          # the host port is free again
        socket.create_connection(("127.0.0.1", port), timeout=3).close()


def test_published_udp_port_and_an_explicit_host_port(backend, echo_image) -> None:
    probe = socket.socket()
    probe.bind(("0.0.0.0", 0))
    free = probe.getsockname()[1]
    probe.close()                   # (another process may take it meanwhile: unlikely)
    c = start_echo(backend, echo_image, ports=["7/udp", f"{free}:7"])
    try:
        ports = c.ports()
        ((uhost, uport),) = ports["7/udp"]
        assert uhost == "127.0.0.1"
        assert udp_ask("127.0.0.1", uport, b"ping") == b"ping"
        # an explicit host port: 0.0.0.0 like Docker, so also the bridge's address
        assert ports["7/tcp"] == [("0.0.0.0", free)]
        gateway = addresses(c.id)[0][0].gateway
        assert http_get("127.0.0.1", free) == f"tcp from {gateway}".encode()  # masqueraded
        assert http_get(gateway, free) == f"tcp from {gateway}".encode()
    finally:
        c.remove(force=True)
    assert rules_of(c.id) == []


def test_publish_all_takes_the_images_exposed_ports(backend, store_dir, busybox_tar) -> None:
    with open(busybox_tar, "rb") as f:
        Store(store_dir).import_tar(f, config=ImageConfig(cmd=("sh",), exposed_ports=(
            "80/tcp", "8080/tcp")), ref="exposing")
    c = backend.run("exposing", command=HTTPD, publish_all=True, ports=["127.0.0.1::8080"])
    try:
        wait_ready(c, [PortProbe(80)])
        ports = c.ports()
        assert sorted(ports) == ["80/tcp", "8080/tcp"]
        ((host, port),) = ports["80/tcp"]
        assert http_get(host, port).startswith(b"HTTP/1.1 200 OK")
    finally:
        c.remove(force=True)


def test_two_containers_publishing_one_port_get_different_host_ports(backend) -> None:
    a = backend.run("busybox", command=HTTPD, ports=[80])
    b = backend.run("busybox", command=["sh", "-c", "echo b > /b; exec httpd -f -p 80 -h /"],
                    ports=[80])
    try:
        wait_ready(a, [PortProbe(80)])
        wait_ready(b, [PortProbe(80)])
        ((_, pa),), ((_, pb),) = a.ports()["80/tcp"], b.ports()["80/tcp"]
        assert pa != pb
        assert b"root:x" in http_get("127.0.0.1", pa)
        assert http_get("127.0.0.1", pb, "/b").endswith(b"\r\n\r\nb\n")
    finally:
        a.remove(force=True)
        b.remove(force=True)


def test_a_taken_host_port_fails_the_start_and_leaves_nothing(backend) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with taken:
        c = backend.create("busybox", command=HTTPD, ports=[f"127.0.0.1:{port}:80", "81"])
        with pytest.raises(PortAllocated,
                           match=f"^Bind for 127.0.0.1:{port} failed: port is already "
                                 "allocated$"):
            c.start()
        assert c.status.value == "created"
        assert leases_of(c.id) == [] and rules_of(c.id) == [] and c.ports() == {}
        # 0.0.0.0 includes 127.0.0.1: taken too
        c2 = backend.create("busybox", command=HTTPD, ports=[f"{port}:80"])
        with pytest.raises(PortAllocated, match=f"Bind for 0.0.0.0:{port} failed"):
            c2.start()
        assert leases_of(c2.id) == [] and rules_of(c2.id) == []
        c.remove()
        c2.remove()


def test_stop_frees_the_port_and_a_restart_publishes_again(backend) -> None:
    c = backend.run("busybox", command=HTTPD, ports=["127.0.0.1::80"])
    try:
        wait_ready(c, [PortProbe(80)])
        ((_, port),) = c.ports()["80/tcp"]
        c.stop(timeout=5)
        # its monitor removed the rules, then closed the reservation, before the exit
        assert rules_of(c.id) == [] and c.ports() == {}
        assert c.inspect()["NetworkSettings"]["Ports"] == {}
        other = backend.run("busybox", command=HTTPD, ports=[f"127.0.0.1:{port}:80"])
        try:
            wait_ready(other, [PortProbe(80)])
            assert b"root:x" in http_get("127.0.0.1", port)
        finally:
            other.remove(force=True)
        c.start()
        wait_ready(c, [PortProbe(80)])
        ((_, again),) = c.ports()["80/tcp"]
        assert b"root:x" in http_get("127.0.0.1", again)
        assert len(rules_of(c.id)) == 2
    finally:
        c.remove(force=True)
    assert rules_of(c.id) == []


def test_ports_need_a_network_and_are_discarded_on_the_host_one(backend) -> None:
    with pytest.raises(UsageError, match="cannot publish ports .80/tcp. of a container on "
                                         "network none"):
        backend.create("busybox", command=HTTPD, ports=[80], network="none")
    c = backend.create("busybox", command=["true"], ports=[80], network="host")
    assert c.spec.ports == ()                       # docker: discarded (the CLI warns)
    c.remove()
    with pytest.raises(UsageError, match="invalid containerPort: x"):
        backend.create("busybox", command=["true"], ports=["x"])


# -- network faults through the API ----------------------------------------------------------


def test_faults_delay_and_loss_are_applied_and_cleared(backend, echo_image) -> None:
    c = start_echo(backend, echo_image, ports=["7/udp"])
    try:
        direct = (c.ip_address(), 7)
        ((_, uport),) = c.ports()["7/udp"]
        published = ("127.0.0.1", uport)
        rtt(direct, count=3)                          # the fresh veth is settled
        assert statistics.median(rtt(direct)) < 0.05
        faults = c.set_faults(delay="200ms", jitter="10ms")
        assert (faults.delay, faults.jitter) == (0.2, 0.01)
        assert min(rtt(direct)) >= 0.185
        assert min(rtt(published)) >= 0.185           # through the DNAT too
        c.set_faults(loss="1%")                       # replaces: no delay now
        assert statistics.median(rtt(direct)) < 0.05
        c.set_faults(loss="50%")
        got = answered(direct)
        assert 50 <= got <= 150, got                  # binomial(200, 0.5): 7 sd
        c.clear_faults()
        assert answered(direct) >= 194
        assert statistics.median(rtt(direct)) < 0.05
        assert delay_processes(str(c.dir.path)) == []
    finally:
        c.remove(force=True)


def test_the_delay_process_ends_with_the_container(backend, echo_image) -> None:
    c = start_echo(backend, echo_image)
    c.set_faults(delay="100ms")
    keepers = delay_processes(str(c.dir.path))
    if not keepers:
        from pydock.backends.native.faults import netem_available
        assert netem_available(), "without netem a pydock-delay process holds the delay"
    assert min(rtt((c.ip_address(), 7), count=3)) >= 0.09
    c.remove(force=True)
    eventually(lambda: delay_processes(str(c.dir.path)) == [], "pydock-delay ended")


def test_fault_errors(backend) -> None:
    c = backend.run("busybox", command=["sleep", "60"], network="none", init=True)
    try:
        with pytest.raises(UsageError, match="on network none"):
            c.set_faults(delay="10ms")
        c.kill()
        c.wait(10)
        with pytest.raises(InvalidState, match="it is not running"):
            c.set_faults(delay="10ms")
        c.clear_faults()                              # nothing to do
    finally:
        c.remove(force=True)
    c = backend.run("busybox", command=["sleep", "60"], init=True)
    try:
        with pytest.raises(UsageError, match="jitter needs a delay"):
            c.set_faults(jitter="10ms")
    finally:
        c.remove(force=True)


# -- the CLI ----------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    r = pydock_cli(*args)
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(),
                                       r.stderr.decode())


def cid_of(name: str) -> str:
    r = cli("inspect", "--type", "container", name)
    assert r.returncode == 0, r.stderr
    return str(json.loads(r.stdout)[0]["Id"])


def test_cli_publish_port_ps_and_rm(busybox_image: str) -> None:
    needs_root()
    r = cli("run", "-d", "--name", "web", "-p", "80", "-p", "127.0.0.1::81/udp", busybox_image,
            *HTTPD)
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    try:
        lines = cli("port", "web").stdout.splitlines()
        assert [line.split(" -> ")[0] for line in lines] == ["80/tcp", "81/udp"]
        addr = cli("port", "web", "80").stdout.strip()
        host, port = addr.rsplit(":", 1)
        assert lines[0] == f"80/tcp -> {addr}" and host == "127.0.0.1"
        deadline = time.monotonic() + 10
        while True:                                   # httpd -f listens soon after start
            try:
                assert http_get(host, int(port)).startswith(b"HTTP/1.1 200 OK")
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        r = cli("port", "web", "90")
        assert (r.returncode, r.stderr) == (1, "pydock: error: No public port '90' published "
                                               "for web\n")
        assert f"{addr}->80/tcp" in cli("ps").stdout
        assert len(rules_of(cid)) == 4
    finally:
        assert cli("rm", "-f", "web").returncode == 0
    assert rules_of(cid) == [] and leases_of(cid) == []


def test_cli_taken_port_and_bad_specs(busybox_image: str) -> None:
    needs_root()
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        port = taken.getsockname()[1]
        r = cli("run", "--rm", "-p", f"{port}:80", busybox_image, "true")
        assert r.returncode == 125
        assert r.stderr == (f"pydock: error: Bind for 0.0.0.0:{port} failed: port is already "
                            "allocated\n")
    assert cli("ps", "-a", "-q").stdout == ""           # --rm: nothing left
    r = cli("run", "--rm", "-p", "80/sctp", busybox_image, "true")
    assert (r.returncode, r.stderr) == (125, "pydock: error: invalid proto: sctp in '80/sctp' "
                                             "(pydock publishes tcp and udp)\n")
    r = cli("run", "--rm", "--network", "host", "-p", "80", busybox_image, "true")
    assert r.returncode == 0
    assert r.stderr == "WARNING: Published ports are discarded when using host network mode\n"


def test_parallel_cli_runs_never_get_the_same_port(busybox_image: str) -> None:
    needs_root()
    procs = [subprocess.Popen([sys.executable, "-m", "pydock", "run", "-d", "--name", f"p{i}",
                               "-p", "80", "-p", "81/udp", busybox_image, "sleep", "60"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(4)]
    try:
        for proc in procs:
            assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
        got = [cli("port", f"p{i}").stdout.split() for i in range(4)]
        tcp = [words[2] for words in got]
        udp = [words[5] for words in got]
        assert len(set(tcp)) == 4 and len(set(udp)) == 4, got
    finally:
        cli("rm", "-f", *(f"p{i}" for i in range(4)))


def test_sigkill_of_the_client_leaves_no_rule(busybox_image: str) -> None:
    """A foreground ``pydock run -p`` killed by SIGKILL: its monitor sees the client go,
    kills the container and removes its rules before freeing the port."""
    needs_root()
    proc = subprocess.Popen([sys.executable, "-m", "pydock", "run", "--name", "fg", "-p", "80",
                             busybox_image, *HTTPD], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        eventually(lambda: cli("port", "fg").stdout != "", "fg publishes its port")
        cid = cid_of("fg")
        assert len(rules_of(cid)) == 2
    finally:
        proc.kill()
        proc.wait()
    eventually(lambda: rules_of(cid) == [], "fg's rules removed")
    assert cli("rm", "-f", "fg").returncode == 0


@pytest.mark.parametrize("command", [["ps", "-a"], ["gc"]])
def test_rules_of_a_sigkilled_monitor_are_swept(busybox_image: str, command: list[str]) -> None:
    """The monitor itself SIGKILLed: its container dies with it, its rules stay until the
    next pydock command (every command sweeps; ``pydock gc`` too), while a running
    container's rules are kept."""
    needs_root()
    assert cli("run", "-d", "--name", "victim", "-p", "80", busybox_image, *HTTPD).returncode == 0
    assert cli("run", "-d", "--name", "bystander", "-p", "80", busybox_image,
               *HTTPD).returncode == 0
    try:
        victim, bystander = cid_of("victim"), cid_of("bystander")
        from pydock.backends.native.backend import NativeBackend
        state = NativeBackend().container("victim").dir.read_state()
        assert len(rules_of(victim)) == 2
        os.kill(int(state["monitor_pid"]), signal.SIGKILL)
        r = cli(*command)
        assert r.returncode == 0, r.stderr
        assert rules_of(victim) == [] and leases_of(victim) == []
        assert len(rules_of(bystander)) == 2
        addr = cli("port", "bystander", "80").stdout.strip().rsplit(":", 1)
        eventually(lambda: _serves(addr[0], int(addr[1])), "bystander still served")
    finally:
        cli("rm", "-f", "victim", "bystander")


def _serves(host: str, port: int) -> bool:
    try:
        return http_get(host, port).startswith(b"HTTP/1.1 200")
    except ConnectionRefusedError:
        return False


def test_cli_net_fault(echo_image: str) -> None:
    needs_root()
    r = cli("run", "-d", "--name", "echo", "-p", "7/udp", echo_image, "python3", "-c", ECHO)
    assert r.returncode == 0, r.stderr
    owner = r.stdout.strip()
    try:
        addr = cli("port", "echo", "7/udp").stdout.strip().rsplit(":", 1)
        target = (addr[0], int(addr[1]))
        eventually(lambda: "ready" in cli("logs", "echo").stdout, "echo ready")
        rtt(target, count=3)
        assert statistics.median(rtt(target)) < 0.05
        r = cli("net-fault", "echo", "--delay", "200ms", "--jitter", "10ms", "--loss", "0%")
        assert (r.returncode, r.stdout) == (0, "echo: delay 200ms jitter 10ms on eth0\n")
        assert min(rtt(target)) >= 0.185              # the CLI exited; its delay holds
        r = cli("net-fault", "echo", "--loss", "50%", "--rate", "10mbit")
        assert r.stdout == "echo: loss 50% rate 10mbit on eth0\n"
        assert 50 <= answered(target) <= 150
        r = cli("net-fault", "echo", "--clear")
        assert (r.returncode, r.stdout) == (0, "echo: faults cleared on eth0\n")
        assert answered(target) >= 194
        assert statistics.median(rtt(target)) < 0.05
        r = cli("net-fault", "echo")
        assert (r.returncode, r.stderr) == (2, "pydock: error: give --delay, --jitter, --loss "
                                               "or --rate (or --clear)\n")
        r = cli("net-fault", "echo", "--delay", "fast")
        assert (r.returncode, r.stderr) == (2, "pydock: error: delay: cannot parse 'fast'\n")
        assert cli("net-fault", "echo", "--delay", "50ms").returncode == 0
    finally:
        assert cli("rm", "-f", "echo").returncode == 0
    eventually(lambda: delay_processes(owner) == [], "pydock-delay ended with the container")


# -- the plugin ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pd_backend", ["native", "docker"])
def test_plugin_publishes_ports_and_sets_faults(run, pd_backend) -> None:
    result = run(test_web="""
        import socket, time
        from urllib.request import urlopen

        HTTPD = "echo hi > /index.html; exec httpd -f -p 80 -h /"

        def get_time(c):
            # a whole request: docker's userland proxy answers a connect by itself
            start = time.perf_counter()
            assert urlopen(c.url(80, "/index.html"), timeout=5).read() == b"hi\\n"
            return time.perf_counter() - start

        def test_published(pydock):
            with pydock.run("busybox", HTTPD, ports=[80], ready=pydock.port(80)) as c:
                host, port = c.address(80)
                assert host == "127.0.0.1" and port != 80
                assert c.ports() == {"80/tcp": [("127.0.0.1", port)]}
                assert urlopen(c.url(80, "/index.html"), timeout=5).read() == b"hi\\n"
                with c.faults(delay="200ms"):
                    assert min(get_time(c) for _ in range(3)) >= 0.18
                assert min(get_time(c) for _ in range(3)) < 0.1

        def test_fixed_host_port_and_unpublished(pydock):
            probe = socket.socket(); probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]; probe.close()
            with pydock.run("busybox", HTTPD, ports={80: free}, ready=pydock.port(80)) as c:
                assert c.address(80) == ("127.0.0.1", free)
                assert urlopen(c.url(80, "/index.html"), timeout=5).read() == b"hi\\n"
    """)
    result.assert_outcomes(passed=2)


def test_plugin_disconnect_and_connect(run) -> None:
    result = run(test_partition="""
        def test_partition(pydock):
            net = pydock.network("part")
            with pydock.run("busybox", "sleep 300", network=net, name="server") as s, \\
                    pydock.run("busybox", "sleep 300", network=net) as client:
                server = s.name
                assert client.exec(f"ping -c1 -W2 {server}").exit_code == 0
                s.disconnect(net)
                assert client.exec(f"ping -c1 -W1 {server}").exit_code != 0
                s.connect(net)
                assert client.exec(f"ping -c1 -W2 {server}").exit_code == 0
    """)
    result.assert_outcomes(passed=1)


# -- the docker backend ---------------------------------------------------------------------------


@pytest.fixture
def docker(docker_raw: Any, docker_busybox: str) -> Iterator[Any]:
    from pydock import DockerBackend

    b = DockerBackend(docker_raw)
    yield b
    b.close()


def test_docker_publishes_ports_and_faults_its_netns(docker, docker_busybox: str) -> None:
    c = docker.run(docker_busybox, command=HTTPD, ports=["80", "127.0.0.1::81/udp"])
    try:
        wait_ready(c, [PortProbe(80)])
        ports = c.ports()
        ((host, port),) = ports["80/tcp"]
        assert host == "127.0.0.1" and ports["81/udp"][0][0] == "127.0.0.1"
        assert c.inspect()["HostConfig"]["PortBindings"]["80/tcp"] == [
            {"HostIp": "127.0.0.1", "HostPort": ""}]
        assert c.spec.ports[0].key == "80/tcp"
        assert http_get(host, port).startswith(b"HTTP/1.1 200 OK")

        def connect() -> float:
            """A whole request: docker's userland proxy answers a connect by itself."""
            start = time.perf_counter()
            assert http_get(host, port).startswith(b"HTTP/1.1 200 OK")
            return time.perf_counter() - start
        assert min(connect() for _ in range(3)) < 0.1
        c.set_faults(delay="200ms")
        assert min(connect() for _ in range(3)) >= 0.18
        c.clear_faults()
        assert min(connect() for _ in range(3)) < 0.1
        c.set_faults(delay="50ms")                    # ends with the container
    finally:
        c.remove(force=True)
    eventually(lambda: delay_processes(f"docker:{c.id[:12]}") == [], "docker's delay ended")
