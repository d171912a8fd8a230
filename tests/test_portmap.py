"""Published ports: Docker's -p rules (pydock.ports), host-port reservation and nftables DNAT
to a test netns (portmap.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import needs_root, require_service
from nethelp import host_objects, ip, udp_ask
from pydock.backends.native.portmap import Mapping, PortForwarder, reserve
from pydock.errors import NetworkError, PortAllocated, UsageError
from pydock.models import PortSpec
from pydock.ports import format_port, parse_publish, publish_all, resolve_ports

ANY = "0.0.0.0"

# -- parsing (pure) ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    # without a host port: a free one on 127.0.0.1; with one: 0.0.0.0 (Docker's default)
    ("80", (PortSpec(80, "tcp", "127.0.0.1"),)),
    ("80/udp", (PortSpec(80, "udp"),)),
    ("80/UDP", (PortSpec(80, "udp"),)),
    ("8080:80", (PortSpec(80, "tcp", ANY, 8080),)),
    ("127.0.0.1:8080:80/udp", (PortSpec(80, "udp", "127.0.0.1", 8080),)),
    ("127.0.0.1::80", (PortSpec(80, "tcp", "127.0.0.1", None),)),
    ("0.0.0.0::80", (PortSpec(80, "tcp", ANY, None),)),
    ("0:80", (PortSpec(80),)),
    ("8000-8001:80-81", (PortSpec(80, host_ip=ANY, host_port=8000),
                         PortSpec(81, host_ip=ANY, host_port=8001))),
    ("80-81", (PortSpec(80), PortSpec(81))),
    ("8000-8010:80", (PortSpec(80, host_ip=ANY, host_port=8000, host_port_end=8010),)),
    ("[127.0.0.1]:8080:80", (PortSpec(80, host_ip="127.0.0.1", host_port=8080),)),
])
def test_parse_publish(text: str, expected: tuple[PortSpec, ...]) -> None:
    assert parse_publish(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("", "no port specified: <empty>"),
    ("8080:", "no port specified: 8080:<empty>"),
    ("80/tcpx", "invalid proto: tcpx"),
    ("80/sctp", "invalid proto: sctp"),
    ("x:8080:80", "invalid IP address: x"),
    ("[::1]:8080:80", "IPv6 host address ::1"),
    ("abc", "invalid containerPort: abc"),
    ("0", "invalid containerPort: 0"),
    ("70000", "invalid containerPort: 70000"),
    ("81-80", "invalid containerPort: 81-80"),
    ("x:80", "invalid hostPort: x"),
    ("8000-8002:80-81", "invalid ranges specified for container and host Ports: 80-81 and 8000-8002"),
])
def test_parse_publish_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match="^" + message.replace("[", r"\[")):
        parse_publish(text)


def test_publish_all_takes_exposed_ports() -> None:
    assert publish_all({"80/tcp": {}, "53/udp": {}, "9000/sctp": {}, "8080": {}}) == (
        PortSpec(53, "udp"), PortSpec(80), PortSpec(8080))
    with pytest.raises(UsageError, match="invalid exposed port: 'x/tcp'"):
        publish_all(["x/tcp"])


def test_resolve_ports_of_run_options() -> None:
    assert resolve_ports([8000, "53/udp", PortSpec(9000, host_port=19000), "8000"]) == (
        PortSpec(8000), PortSpec(53, "udp"), PortSpec(9000, host_port=19000))
    # -P: the exposed ports that no -p publishes
    assert resolve_ports(["8080:80"], publish_all_exposed=True,
                         exposed=["80/tcp", "443/tcp"]) == (
        PortSpec(80, host_ip=ANY, host_port=8080), PortSpec(443))
    with pytest.raises(UsageError, match="invalid published port 1.5"):
        resolve_ports([1.5])  # type: ignore[list-item]
    with pytest.raises(UsageError, match="invalid proto: sctp"):
        resolve_ports([PortSpec(80, "sctp")])
    with pytest.raises(UsageError, match="invalid hostPort: 70000"):
        resolve_ports([PortSpec(80, host_port=70000)])
    with pytest.raises(UsageError, match="IPv6 host address ::1"):
        resolve_ports([PortSpec(80, host_ip="::1")])


def test_format_port_like_docker() -> None:
    ports = {"53/udp": [(ANY, 49154)], "80/tcp": [("127.0.0.1", 49153)],
             "443/tcp": [(ANY, 8443)]}
    assert format_port(ports, name="web") == [
        "53/udp -> 0.0.0.0:49154", "80/tcp -> 127.0.0.1:49153", "443/tcp -> 0.0.0.0:8443"]
    assert format_port(ports, name="web", private="80") == ["127.0.0.1:49153"]
    assert format_port(ports, name="web", private="443/tcp") == ["0.0.0.0:8443"]
    with pytest.raises(NetworkError, match="^No public port '80/udp' published for web$"):
        format_port(ports, name="web", private="80/udp")
    with pytest.raises(NetworkError, match="^No public port '90' published for web$"):
        format_port(ports, name="web", private="90")


def test_mapping_comment_round_trip() -> None:
    m = Mapping("0123abc", "udp", "127.0.0.1", 40000, "10.213.250.130", 53)
    assert Mapping.from_comment(m.comment()) == m
    assert Mapping.from_comment("something else") is None


# -- reservation ---------------------------------------------------------------------------


def test_reserve_chooses_a_port_and_holds_it() -> None:
    for proto in ("tcp", "udp"):
        sock, port = reserve(PortSpec(80, proto, "127.0.0.1"))  # type: ignore[arg-type]
        with sock:
            assert sock.getsockname() == ("127.0.0.1", port) and port > 1024
            with pytest.raises(PortAllocated,
                               match=f"^Bind for 127.0.0.1:{port} failed: port is already allocated$"):
                reserve(PortSpec(80, proto, "127.0.0.1", port))  # type: ignore[arg-type]
        again, _ = reserve(PortSpec(80, proto, "127.0.0.1", port))  # type: ignore[arg-type]
        again.close()


def test_reserve_in_a_host_range_skips_taken_ports() -> None:
    first, port = reserve(PortSpec(80, host_ip=ANY))
    with first:
        sock, chosen = reserve(PortSpec(80, host_ip=ANY, host_port=port,
                                        host_port_end=port + 1))
        with sock:
            assert chosen == port + 1
        with pytest.raises(PortAllocated, match=f"0.0.0.0:{port}-{port} failed"):
            reserve(PortSpec(80, host_ip=ANY, host_port=port, host_port_end=port))
        with pytest.raises(PortAllocated, match=f"127.0.0.1:{port} failed"):
            reserve(PortSpec(80, host_port=port))  # 0.0.0.0 covers 127.0.0.1
    with pytest.raises(NetworkError, match="no such address on this host"):
        reserve(PortSpec(80, host_ip="192.0.2.222"))


def test_parallel_processes_get_distinct_ports() -> None:
    code = textwrap.dedent("""
        import sys
        from pydock.backends.native.portmap import reserve
        from pydock.models import PortSpec
        held = [reserve(PortSpec(80, sys.argv[1]))  for _ in range(40)]
        print(" ".join(str(p) for _, p in held), flush=True)
        sys.stdin.read()   # hold the reservations until the test closes stdin
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, proto], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
             for proto in ("tcp", "tcp", "tcp", "udp", "udp", "udp")]
    try:
        ports: dict[str, list[int]] = {"tcp": [], "udp": []}
        for proc, proto in zip(procs, ("tcp",) * 3 + ("udp",) * 3, strict=True):
            assert proc.stdout is not None
            ports[proto] += [int(p) for p in proc.stdout.readline().split()]
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=30)
    for proto, got in ports.items():
        assert len(got) == 120, proto
        assert len(set(got)) == 120, f"{proto}: the same port was handed out twice"


# -- forwarding to a test network namespace -------------------------------------------------

PREFIX = f"pdkt{os.getpid() % 100000}p"        # <= 15-character link names
BLOCK = 128 + 16 * (os.getpid() % 4)            # a /28 of 10.213.250.0/24 of our own
GATEWAY = f"10.213.250.{BLOCK + 1}"
TABLE = f"pdkt{os.getpid()}"

SERVER = textwrap.dedent("""
    import socket, sys, threading
    name = sys.argv[1].encode()
    def tcp():
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 8080)); s.listen(64)
        while True:
            c, addr = s.accept()
            c.sendall(b"tcp " + name + b" " + c.recv(100) + b" from " + addr[0].encode())
            c.close()
    def udp():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 5353))
        while True:
            data, addr = s.recvfrom(100)
            s.sendto(b"udp " + name + b" " + data, addr)
    threading.Thread(target=tcp, daemon=True).start()
    threading.Thread(target=udp, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()
""")


@dataclass(frozen=True)
class Box:
    """A test 'container': a netns with eth0 on the test bridge and a TCP+UDP server."""

    name: str
    ip: str


def _our_objects() -> dict[str, list[str]]:
    tables = json.loads(subprocess.run(["nft", "-j", "list", "tables"], capture_output=True,
                                       check=True, text=True).stdout)["nftables"]
    return host_objects(PREFIX, tables=[t["table"]["name"] for t in tables
                                        if "table" in t and t["table"]["name"] == TABLE])


@pytest.fixture(scope="module")
def boxes() -> Iterator[tuple[str, list[Box]]]:
    """Bridge ``<PREFIX>b`` with two netns 'containers' running servers; all removed after."""
    needs_root()
    bridge = f"{PREFIX}b"
    procs: list[subprocess.Popen[str]] = []
    made: list[Box] = []
    try:
        ip("link", "add", bridge, "type", "bridge")
        ip("addr", "add", f"{GATEWAY}/28", "dev", bridge)
        ip("link", "set", bridge, "up")
        for i in (1, 2):
            box = Box(f"{PREFIX}{i}", f"10.213.250.{BLOCK + 1 + i}")
            ip("netns", "add", box.name)
            made.append(box)
            ip("link", "add", f"{PREFIX}h{i}", "type", "veth", "peer", "name", "eth0",
                "netns", box.name)
            ip("link", "set", f"{PREFIX}h{i}", "master", bridge, "up")
            ip("-n", box.name, "addr", "add", f"{box.ip}/28", "dev", "eth0")
            ip("-n", box.name, "link", "set", "eth0", "up")
            ip("-n", box.name, "link", "set", "lo", "up")
            ip("-n", box.name, "route", "add", "default", "via", GATEWAY)
            proc = subprocess.Popen(["ip", "netns", "exec", box.name, sys.executable, "-c",
                                     SERVER, f"box{i}"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
            procs.append(proc)
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield bridge, made
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.kill()
            proc.wait()
        for box in made:
            subprocess.run(["ip", "netns", "del", box.name], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        subprocess.run(["nft", "delete", "table", "ip", TABLE], capture_output=True)
        deadline = time.monotonic() + 10        # veth teardown is asynchronous
        while (left := _our_objects()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"leaked: {left}"


@pytest.fixture
def forwarder(boxes: tuple[str, list[Box]]) -> Iterator[PortForwarder]:
    fw = PortForwarder(table=TABLE)
    yield fw
    fw.remove_all()
    fw.close()


def tcp_ask(host: str, port: int, payload: bytes = b"hi") -> bytes:
    """One TCP exchange; retries a connect the fresh veth may drop (facts.md), never times."""
    for attempt in range(5):
        try:
            with socket.create_connection((host, port), timeout=2) as c:
                c.sendall(payload)
                return c.recv(200)
        except TimeoutError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def nft_rules(table: str) -> list[dict[str, object]]:
    """The rules of ``table`` as the nft command lists them (an independent check)."""
    out = subprocess.run(["nft", "-j", "list", "table", "ip", table], capture_output=True,
                         text=True)
    if out.returncode != 0:
        return []
    return [item["rule"] for item in json.loads(out.stdout)["nftables"] if "rule" in item]


def publish(fw: PortForwarder, bridge: str, box: Box, cid: str, proto: str, cport: int,
            host_ip: str = "0.0.0.0") -> tuple[socket.socket, int]:
    sock, port = reserve(PortSpec(cport, proto, host_ip))  # type: ignore[arg-type]
    fw.add([Mapping(cid, proto, host_ip, port, box.ip, cport)], bridge=bridge)  # type: ignore[arg-type]
    return sock, port


def test_tcp_and_udp_reach_the_container_from_loopback(
        boxes: tuple[str, list[Box]], forwarder: PortForwarder) -> None:
    bridge, (box, _) = boxes
    tsock, tport = publish(forwarder, bridge, box, "c1", "tcp", 8080)
    usock, uport = publish(forwarder, bridge, box, "c1", "udp", 5353)
    with tsock, usock:
        # from 127.0.0.1: masqueraded to the bridge's address
        assert tcp_ask("127.0.0.1", tport) == f"tcp box1 hi from {GATEWAY}".encode()
        assert udp_ask("127.0.0.1", uport) == b"udp box1 hi"
        # host_ip 0.0.0.0: every local address of the host, e.g. the bridge's
        assert tcp_ask(GATEWAY, tport).startswith(b"tcp box1 hi")
        assert udp_ask(GATEWAY, uport) == b"udp box1 hi"
        assert sorted(m.key for m in forwarder.mappings()) == ["5353/udp", "8080/tcp"]
        with open(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet") as f:
            assert f.read().strip() == "1"


def test_host_ip_limits_the_addresses(boxes: tuple[str, list[Box]],
                                      forwarder: PortForwarder) -> None:
    bridge, (box, _) = boxes
    sock, port = publish(forwarder, bridge, box, "c1", "tcp", 8080, host_ip="127.0.0.1")
    with sock:
        assert tcp_ask("127.0.0.1", port).startswith(b"tcp box1")
        with pytest.raises(ConnectionRefusedError):      # the bridge address is not mapped
            socket.create_connection((GATEWAY, port), timeout=2).close()


def test_two_containers_then_remove_for_and_sweep(boxes: tuple[str, list[Box]],
                                                  forwarder: PortForwarder) -> None:
    bridge, (box1, box2) = boxes
    s1, p1 = publish(forwarder, bridge, box1, "c1", "tcp", 8080)
    s2, p2 = publish(forwarder, bridge, box2, "c2", "tcp", 8080)
    s3, p3 = publish(forwarder, bridge, box2, "c3", "udp", 5353)
    with s1, s2, s3:
        assert tcp_ask("127.0.0.1", p1).startswith(b"tcp box1")
        assert tcp_ask("127.0.0.1", p2).startswith(b"tcp box2")
        assert udp_ask("127.0.0.1", p3) == b"udp box2 hi"
        assert {r["comment"].split()[1] for r in nft_rules(TABLE)} == {"c1", "c2", "c3"}  # type: ignore[union-attr]

        assert forwarder.remove_for("c1") is True
        assert forwarder.remove_for("c1") is False
        assert {r["comment"].split()[1] for r in nft_rules(TABLE)} == {"c2", "c3"}  # type: ignore[union-attr]
        with pytest.raises(ConnectionRefusedError):      # only our unlistening reservation
            socket.create_connection(("127.0.0.1", p1), timeout=2).close()
        assert tcp_ask("127.0.0.1", p2).startswith(b"tcp box2")

        assert forwarder.sweep(keep_ids={"c3"}) == {"c2"}
        assert [m.container_id for m in forwarder.mappings()] == ["c3"]
        assert forwarder.sweep(keep_ids=set()) == {"c3"}
        assert nft_rules(TABLE) == []
        assert forwarder.exists()
        forwarder.remove_all()
        assert not forwarder.exists()
        forwarder.remove_all()                             # idempotent


def test_add_replaces_stale_rules_of_its_host_port(boxes: tuple[str, list[Box]],
                                                  forwarder: PortForwarder) -> None:
    """Whoever holds a port's reservation owns it: a rule left on that port by a dead
    owner goes in the same batch."""
    bridge, (box1, box2) = boxes
    sock, port = reserve(PortSpec(8080, host_ip=ANY))
    with sock:
        forwarder.add([Mapping("old", "tcp", ANY, port, box1.ip, 8080)], bridge=bridge)
        forwarder.add([Mapping("other", "udp", ANY, port, box1.ip, 5353)], bridge=bridge)
        assert tcp_ask("127.0.0.1", port).startswith(b"tcp box1")
        forwarder.add([Mapping("new", "tcp", "127.0.0.1", port, box2.ip, 8080)],
                      bridge=bridge)
        assert sorted(m.container_id for m in forwarder.mappings()) == ["new", "other"]
        assert tcp_ask("127.0.0.1", port).startswith(b"tcp box2")


def test_coexists_with_dockers_forward_drop(boxes: tuple[str, list[Box]],
                                            forwarder: PortForwarder) -> None:
    """With dockerd's FORWARD policy DROP and bridge-nf-call-iptables=1 the DNAT'd host
    traffic still arrives: it takes the OUTPUT path, never FORWARD."""
    bridge, (box, _) = boxes
    docker = os.path.exists("/var/run/docker.sock") and subprocess.run(
        ["nft", "list", "chain", "ip", "filter", "FORWARD"], capture_output=True,
        text=True).returncode == 0
    require_service(docker, "a Docker daemon (its iptables-nft FORWARD chain)")
    forward = subprocess.run(["nft", "-j", "list", "chain", "ip", "filter", "FORWARD"],
                             capture_output=True, text=True, check=True).stdout
    chain = next(i["chain"] for i in json.loads(forward)["nftables"] if "chain" in i)
    assert chain["policy"] == "drop"
    with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
        assert f.read().strip() == "1"
    tsock, tport = publish(forwarder, bridge, box, "c1", "tcp", 8080)
    usock, uport = publish(forwarder, bridge, box, "c1", "udp", 5353)
    with tsock, usock:
        assert tcp_ask("127.0.0.1", tport).startswith(b"tcp box1")
        assert udp_ask("127.0.0.1", uport) == b"udp box1 hi"


def test_bad_mappings_are_refused_before_nft(forwarder: PortForwarder) -> None:
    with pytest.raises(UsageError, match="invalid container id"):
        forwarder.add([Mapping('c"1', "tcp", "0.0.0.0", 1000, "10.0.0.2", 80)], bridge="br0")
    with pytest.raises(UsageError, match="not an IPv4 address: '::1'"):
        forwarder.add([Mapping("c1", "tcp", "::1", 1000, "10.0.0.2", 80)], bridge="br0")
    with pytest.raises(UsageError, match="invalid interface name"):
        forwarder.add([], bridge="a bridge")
    with pytest.raises(NetworkError, match="no bridge 'pdktnone'"):
        forwarder.add([Mapping("c1", "tcp", "0.0.0.0", 1000, "10.0.0.2", 80)], bridge="pdktnone")
    assert nft_rules(TABLE) == []
