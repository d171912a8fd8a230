"""Network faults measured on real traffic between the host and a test network namespace."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import needs_root
from nethelp import host_objects, ip
from nethelp import rtt as echo_rtt
from pydock.backends.native import faults
from pydock.backends.native.faults import Faults, parse_duration, parse_faults, parse_percent, parse_rate
from pydock.errors import EngineUnavailable, NetworkError, UsageError

# -- parsing (pure) ------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "seconds"), [
    ("100ms", 0.1), ("1.5s", 1.5), ("250us", 0.00025), (" 20 msec ", 0.02), (0.3, 0.3), (2, 2.0),
])
def test_parse_duration(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(("value", "percent"), [("5%", 5.0), ("0.5%", 0.5), ("100", 100.0), (7, 7.0)])
def test_parse_percent(value: str | float, percent: float) -> None:
    assert parse_percent(value) == percent


@pytest.mark.parametrize(("value", "bits"), [
    ("1mbit", 10**6), ("512kbit", 512_000), ("1mibit", 2**20), ("10mbps", 80 * 10**6),
    ("100bit", 100), (64_000, 64_000), ("1.5gbit", 1_500_000_000),
])
def test_parse_rate(value: str | int, bits: int) -> None:
    assert parse_rate(value) == bits


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"delay": "100"}, "delay: '100' needs a unit: us, ms or s"),
    ({"delay": "fast"}, "delay: cannot parse 'fast'"),
    ({"delay": "2h"}, "delay: '2h' needs a unit"),
    ({"delay": -1}, "delay: -1 is negative"),
    ({"loss": "101%"}, "loss: '101%' is more than 100%"),
    ({"loss": "5ms"}, "loss: '5ms' is not a percentage"),
    ({"rate": "1mb"}, "rate: '1mb' needs a unit: bit, kbit"),
    ({"rate": "1bit"}, "rate: '1bit' is below 8 bit/s"),
    ({"jitter": "10ms"}, "jitter needs a delay"),
    ({"delay": "10ms", "jitter": "20ms"}, "jitter '20ms' is larger than the delay '10ms'"),
    ({"delay": True}, "delay: expected a string or a number"),
])
def test_parse_faults_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match="^" + message):
        parse_faults(**kwargs)  # type: ignore[arg-type]


def test_parse_faults_values() -> None:
    assert parse_faults(delay="100ms", jitter="10ms", loss="5%", rate="1mbit") == Faults(
        delay=0.1, jitter=0.01, loss=5.0, rate=10**6)
    assert not parse_faults()


# -- on real traffic -----------------------------------------------------------------------

PREFIX = f"pdkt{os.getpid() % 100000}f"
BLOCK = 192 + 16 * (os.getpid() % 4)            # a /28 of 10.213.250.0/24 of our own
GATEWAY, BOX_IP = f"10.213.250.{BLOCK + 1}", f"10.213.250.{BLOCK + 2}"
BULK = 256 * 1024

SERVER = textwrap.dedent("""
    import socket, sys, threading
    def udp_echo():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 7))
        while True:
            data, addr = s.recvfrom(100); s.sendto(data, addr)
    def bulk():
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 9)); s.listen(8)
        while True:
            c, _ = s.accept(); c.sendall(b"x" * int(sys.argv[1])); c.close()
    threading.Thread(target=udp_echo, daemon=True).start()
    threading.Thread(target=bulk, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()
""")


def _our_objects() -> dict[str, list[str]]:
    return host_objects(PREFIX, threads=[t.name for t in threading.enumerate()
                                         if t.name == "pydock-delay"])


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    """A netns (path) whose eth0 sits on a test bridge, with a UDP echo and a bulk server."""
    needs_root()
    name, bridge = f"{PREFIX}1", f"{PREFIX}b"
    proc = None
    try:
        ip("link", "add", bridge, "type", "bridge")
        ip("addr", "add", f"{GATEWAY}/28", "dev", bridge)
        ip("link", "set", bridge, "up")
        ip("netns", "add", name)
        # eth0 gets an index above 65535, as Docker's veths do on a host that has made
        # many containers: the NFQUEUE number must still fit in 16 bits (made inside the
        # netns: `ip` ignores an index given to a veth's peer)
        ip("-n", name, "link", "add", "eth0", "index", "70000", "type", "veth", "peer", "name",
           f"{PREFIX}h", "netns", str(os.getpid()))
        ip("link", "set", f"{PREFIX}h", "master", bridge, "up")
        ip("-n", name, "addr", "add", f"{BOX_IP}/28", "dev", "eth0")
        ip("-n", name, "link", "set", "eth0", "up")
        ip("-n", name, "link", "set", "lo", "up")
        proc = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", SERVER,
                                 str(BULK)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        rtt(count=3)                                # the fresh veth is settled
        yield f"/run/netns/{name}"
    finally:
        if proc is not None:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.kill()
            proc.wait()
        if os.path.exists(f"/run/netns/{name}"):
            faults.clear(f"/run/netns/{name}")
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        deadline = time.monotonic() + 10            # veth teardown is asynchronous
        while (left := _our_objects()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"leaked: {left}"


@pytest.fixture
def ns(netns: str) -> Iterator[str]:
    """The test netns, its faults cleared after each test (and checked gone)."""
    yield netns
    faults.clear(netns)
    assert leftover_faults(netns) == []


def leftover_faults(netns: str) -> list[str]:
    """qdiscs, nft tables and NFQUEUE rules of ours still in the namespace."""
    name = os.path.basename(netns)
    qdiscs = json.loads(subprocess.run(["ip", "netns", "exec", name, "tc", "-j", "qdisc", "show",
                                        "dev", "eth0"], capture_output=True, text=True).stdout)
    tables = json.loads(subprocess.run(["ip", "netns", "exec", name, "nft", "-j", "list",
                                        "tables"], capture_output=True, text=True).stdout)
    rules = subprocess.run(["ip", "netns", "exec", name, "iptables", "-t", "mangle", "-S"],
                           capture_output=True, text=True).stdout
    return ([f"qdisc {q['kind']}" for q in qdiscs if q["kind"] in ("netem", "tbf")]
            + [f"table {t['table']['name']}" for t in tables["nftables"]
               if "table" in t and t["table"]["name"] == "pydock_fault"]
            + [line for line in rules.splitlines() if "NFQUEUE" in line])


def rtt(count: int = 7) -> list[float]:
    """UDP echo round trips (seconds) to the test netns; a lost probe is retried."""
    return echo_rtt((BOX_IP, 7), count)


def answered(count: int) -> list[float]:
    """Round trips (seconds, an upper bound each) of those of ``count`` UDP probes, sent 1 ms
    apart, that get an echo within 2 s of the last."""
    sent: dict[bytes, float] = {}
    got: dict[bytes, float] = {}

    def receive(s: socket.socket) -> None:
        try:
            data = s.recv(100)
        except TimeoutError:
            return
        got.setdefault(data, time.perf_counter() - sent[data])

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.settimeout(0.001)
        for i in range(count):
            sent[str(i).encode()] = time.perf_counter()
            s.sendto(str(i).encode(), (BOX_IP, 7))
            receive(s)
        deadline = time.monotonic() + 2
        while len(got) < count and time.monotonic() < deadline:
            receive(s)
    return list(got.values())


def test_delay_raises_round_trips_and_clear_restores_them(ns: str) -> None:
    assert statistics.median(rtt()) < 0.05
    assert faults.apply(ns, "eth0", delay="200ms") == Faults(delay=0.2)
    assert statistics.median(rtt()) >= 0.15
    faults.clear(ns, "eth0")
    assert statistics.median(rtt()) < 0.05


def test_jitter_spreads_round_trips(ns: str) -> None:
    faults.apply(ns, delay="100ms", jitter="50ms")
    times = rtt(count=15)
    assert min(times) >= 0.045
    assert max(times) - min(times) > 0.02        # 15 uniform draws in +-50 ms


def test_loss_drops_about_that_share(ns: str) -> None:
    faults.apply(ns, loss="50%")
    got = len(answered(200))
    assert 50 <= got <= 150, got                  # binomial(200, 0.5): 7 standard deviations
    faults.clear(ns)
    assert len(answered(200)) >= 194


def test_delay_and_loss_together_and_apply_replaces(ns: str) -> None:
    fd = os.open(ns, os.O_RDONLY | os.O_CLOEXEC)  # a namespace given as an open fd
    try:
        faults.apply(fd, delay="150ms", loss="50%")
        times = answered(200)
        assert 50 <= len(times) <= 150
        assert min(times) >= 0.1
        faults.apply(fd, loss="1%")               # replaces: the delay is gone
        assert statistics.median(rtt()) < 0.05
    finally:
        os.close(fd)


def test_rate_limits_bandwidth(ns: str) -> None:
    faults.apply(ns, rate="1mbit")
    start = time.monotonic()
    with socket.create_connection((BOX_IP, 9), timeout=30) as c:
        received = 0
        while chunk := c.recv(65536):
            received += len(chunk)
    took = time.monotonic() - start
    assert received == BULK
    assert took >= 0.75 * BULK * 8 / 1e6          # 2.1 s at 1 mbit; unlimited: milliseconds


def test_clear_without_faults_and_bad_targets(ns: str) -> None:
    faults.clear(ns)
    faults.clear(ns, "eth0")
    with pytest.raises(NetworkError, match=f"no interface 'eth9' in network namespace {ns}"):
        faults.apply(ns, "eth9", delay="10ms")
    with pytest.raises(NetworkError, match="no network namespace /run/netns/pdkt-none"):
        faults.apply("/run/netns/pdkt-none", delay="10ms")
    with pytest.raises(NetworkError, match="cannot join network namespace /etc/hostname"):
        faults.apply("/etc/hostname", delay="10ms")
    assert faults.netns_of(1) == "/proc/1/ns/net"


def test_duplicate_and_corrupt(ns: str) -> None:
    if faults.netem_available():
        faults.apply(ns, duplicate="100%")
        assert leftover_faults(ns) == ["qdisc netem"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(b"dup", (BOX_IP, 7))
            assert s.recv(10) == b"dup" and s.recv(10) == b"dup"
    else:
        with pytest.raises(EngineUnavailable, match="CONFIG_NET_SCH_NETEM"):
            faults.apply(ns, duplicate="1%")
        with pytest.raises(EngineUnavailable, match="duplicate and corrupt need"):
            faults.apply(ns, corrupt="1%", delay="10ms")
        assert leftover_faults(ns) == []


def test_a_delay_ends_with_the_process_that_holds_it(ns: str) -> None:
    if faults.netem_available():
        pytest.skip("with tc netem the kernel holds the delay: no process involved")
    code = ("import sys; from pydock.backends.native import faults; "
            "faults.apply(sys.argv[1], delay='300ms'); print('on', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, ns], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "on\n"
    assert statistics.median(rtt(count=3)) >= 0.25
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    assert statistics.median(rtt()) < 0.05         # its NFQUEUE rule is inert (--queue-bypass)
    faults.clear(ns)                               # and clear removes it all the same
    assert leftover_faults(ns) == []


def test_netem_is_found_missing_by_trying(ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel config cannot be read, apply() tries netem first; a kernel without
    it answers ENOENT and the fallback applies the delay all the same."""
    kernel_has_netem = faults.netem_available()
    monkeypatch.setattr(faults, "_netem", True)
    faults.apply(ns, delay="200ms")
    assert statistics.median(rtt(count=3)) >= 0.15
    assert faults.netem_available() is kernel_has_netem
