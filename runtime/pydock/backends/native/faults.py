"""Network faults on a running container's interface: delay, jitter, loss, rate, and undo.

API::

    apply(netns, "eth0", delay="200ms", jitter="20ms", loss="5%", rate="1mbit") -> Faults
    clear(netns, "eth0")
    parse_faults(delay=..., ...) -> Faults      # the pure parser and validator behind apply
    netns_of(pid) -> "/proc/PID/ns/net"

``netns`` is an open file descriptor of a network namespace or a path to one (use
``netns_of(pid)`` for a container's PID 1).  Values are tc/Docker-style strings or numbers:
durations ``"100ms"``, ``"1.5s"``, ``"250us"`` (a number is seconds), percentages ``"5%"``
(a number is percent), rates ``"1mbit"``, ``"512kbit"``, ``"10mbps"`` (bytes: tc's
``bps``; a number is bits/s).  Bad values raise ``UsageError`` naming the option.  The
faults act on the traffic leaving the interface, as ``tc qdisc ... netem`` does, so a
delay adds once to every round trip through it.  ``apply`` replaces the interface's
previous faults; ``clear`` removes them (no error when there are none).

How, depending on the kernel:

- with ``sch_netem``: one root netem qdisc does everything (pyroute2, over a netlink
  socket opened inside the namespace: no process per call; ``_root_qdisc`` is the only
  function touching pyroute2);
- without it (the project's kernels lack CONFIG_NET_SCH_NETEM): ``loss`` is an nftables
  rule in the namespace (``numgen random``) dropping *arriving* packets (a netfilter drop
  of a leaving packet would fail the sender's send() with EPERM; for round trips the loss
  rate is the same), ``rate`` a root tbf qdisc, and ``delay`` /
  ``jitter`` an NFQUEUE rule (``--queue-bypass``) whose packets a thread of *this* process
  releases when due: the delay lasts until ``clear`` or until this process exits (then
  packets pass undelayed).  With ``hold="process"`` (what the engine, its CLI and the
  pytest plugin use) a small detached process ``pydock-delay`` holds the queue instead:
  it ends at ``clear``, or by itself when the process ``watch`` (the container's PID 1)
  exits, so the delay outlives the command that set it and nothing outlives the
  container.  Keepers are recorded in ``<net state>/delay/`` (pid and start time), so
  ``clear`` and ``sweep_keepers`` end them by PID.  ``duplicate`` and ``corrupt`` need
  netem (``EngineUnavailable`` says so).

This is the only module that imports pyroute2 (lazily: the import costs ~200 ms).
"""

from __future__ import annotations

import argparse
import errno
import gzip
import heapq
import json
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydock.errors import EngineUnavailable, NetworkError, PydockError, UsageError

from .nftables import Nft, NftError, call_in_netns

Netns = int | str | os.PathLike[str]
Value = str | int | float | None

_NFT_TABLE = "pydock_fault"
_QUEUE_BASE = 0x5000                 # NFQUEUE numbers are per namespace and 16 bits wide


def _queue_of(ifindex: int) -> int:
    """The NFQUEUE number of an interface, within 16 bits however high its index (a host
    that has made many containers gives Docker's veths indexes above 65535).  Two
    interfaces of one namespace share a number only if their indexes are 45056 apart."""
    return _QUEUE_BASE + ifindex % (0x10000 - _QUEUE_BASE)


def netns_of(pid: int) -> str:
    """The network namespace of process ``pid`` as a path ``apply``/``clear`` accept."""
    return f"/proc/{pid}/ns/net"


# -- values --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Faults:
    """Faults on an interface: seconds, percents (0-100), bits per second (None: unlimited)."""

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    rate: int | None = None

    def __bool__(self) -> bool:
        return self != Faults()


_TIME_UNITS = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "msec": 1e-3, "us": 1e-6, "usec": 1e-6}
_RATE_UNITS = {
    "bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12,
    "kibit": 2**10, "mibit": 2**20, "gibit": 2**30, "tibit": 2**40,
    "bps": 8, "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9, "tbps": 8 * 10**12,
}
_NUMBER = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z%]*)\s*")


def _split(option: str, value: str | int | float) -> tuple[float, str]:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UsageError(f"{option}: expected a string or a number, got {value!r}")
    if not isinstance(value, str):
        if value < 0:
            raise UsageError(f"{option}: {value!r} is negative")
        return float(value), ""
    m = _NUMBER.fullmatch(value)
    if m is None:
        raise UsageError(f"{option}: cannot parse {value!r}")
    return float(m.group(1)), m.group(2).lower()


def parse_duration(value: str | int | float, *, option: str = "delay") -> float:
    """``"100ms"``, ``"1.5s"``, ``"250us"`` (or a number of seconds) -> seconds."""
    number, unit = _split(option, value)
    if isinstance(value, str) and unit not in _TIME_UNITS:
        raise UsageError(f"{option}: {value!r} needs a unit: us, ms or s (e.g. '100ms')")
    seconds = number * _TIME_UNITS.get(unit, 1.0)
    if seconds > 3600:
        raise UsageError(f"{option}: {value!r} is more than an hour")
    return seconds


def parse_percent(value: str | int | float, *, option: str = "loss") -> float:
    """``"5%"``, ``"0.5%"`` or ``5`` -> 5.0 (percent, 0-100)."""
    number, unit = _split(option, value)
    if unit not in ("", "%"):
        raise UsageError(f"{option}: {value!r} is not a percentage (e.g. '5%')")
    if number > 100:
        raise UsageError(f"{option}: {value!r} is more than 100%")
    return number


def parse_rate(value: str | int | float, *, option: str = "rate") -> int:
    """``"1mbit"``, ``"512kbit"``, ``"10mbps"`` (bytes, as tc has it) or bits/s -> bits/s."""
    number, unit = _split(option, value)
    if isinstance(value, str) and unit not in _RATE_UNITS:
        raise UsageError(f"{option}: {value!r} needs a unit: bit, kbit, mbit, gbit or "
                         "bps, kbps, mbps (bytes per second)")
    bits = int(number * _RATE_UNITS.get(unit, 1))
    if bits < 8:
        raise UsageError(f"{option}: {value!r} is below 8 bit/s")
    if bits > 8 * (2**32 - 1):
        raise UsageError(f"{option}: {value!r} is above 34 gbit")
    return bits


def parse_faults(*, delay: Value = None, jitter: Value = None, loss: Value = None,
                 duplicate: Value = None, corrupt: Value = None, rate: Value = None) -> Faults:
    """Validate and convert the options of ``apply`` (None: no such fault)."""
    f = Faults(
        delay=parse_duration(delay, option="delay") if delay is not None else 0.0,
        jitter=parse_duration(jitter, option="jitter") if jitter is not None else 0.0,
        loss=parse_percent(loss, option="loss") if loss is not None else 0.0,
        duplicate=parse_percent(duplicate, option="duplicate") if duplicate is not None else 0.0,
        corrupt=parse_percent(corrupt, option="corrupt") if corrupt is not None else 0.0,
        rate=parse_rate(rate) if rate is not None else None,
    )
    if f.jitter and not f.delay:
        raise UsageError("jitter needs a delay (e.g. delay='100ms', jitter='10ms')")
    if f.jitter > f.delay:
        raise UsageError(f"jitter {jitter!r} is larger than the delay {delay!r}")
    return f


# -- netlink (pyroute2) inside the namespace ------------------------------------------------

def _ifindex(netns: Netns, ifname: str) -> int:
    def lookup() -> int:
        try:
            return socket.if_nametoindex(ifname)
        except OSError:
            raise NetworkError(f"no interface {ifname!r} in network namespace {netns}") from None
    return call_in_netns(netns, lookup)


class _NoSuchQdisc(Exception):
    """The kernel does not know the qdisc kind (ENOENT on add)."""


def _root_qdisc(netns: Netns, index: int, kind: str | None, **options: Any) -> None:
    """Replace the root qdisc of interface ``index`` in ``netns`` by ``kind`` with pyroute2's
    ``options`` (``kind=None``: delete it; no error when there is none).  The only code here
    that touches pyroute2: over a NETLINK_ROUTE socket opened inside the namespace."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    sock = call_in_netns(netns, lambda: socket.socket(
        socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0))
    ipr = IPRoute(use_socket=sock)
    try:
        if kind is None:
            ipr.tc("del", index=index, parent=0xFFFFFFFF)
        else:
            ipr.tc("replace", kind, index, **options)
    except NetlinkError as exc:
        if kind is None and exc.code in (errno.ENOENT, errno.EINVAL):
            return                                  # no root qdisc of ours to delete
        if kind is not None and exc.code == errno.ENOENT:
            raise _NoSuchQdisc(kind) from None
        raise NetworkError(f"tc qdisc {'del' if kind is None else 'replace ' + kind} on "
                           f"ifindex {index} in {netns}: {os.strerror(exc.code)}") from None
    finally:
        ipr.close()
        sock.close()


_netem: bool | None = None


def netem_available() -> bool:
    """Whether the kernel has the netem qdisc: loaded, built in (kernel config) or as a
    module file; when none of these can be read, assume it has (``apply`` finds out)."""
    global _netem
    if _netem is None:
        release = os.uname().release
        _netem = True
        if not os.path.exists("/sys/module/sch_netem"):
            config = b""
            for path in ("/proc/config.gz", f"/boot/config-{release}"):
                try:
                    with open(path, "rb") as f:
                        config = f.read()
                    config = gzip.decompress(config) if path.endswith(".gz") else config
                    break
                except OSError:
                    continue
            if config:
                _netem = re.search(rb"^CONFIG_NET_SCH_NETEM=[ym]", config, re.M) is not None
    return _netem


# -- the no-netem path: nftables loss, NFQUEUE delay, tbf rate -------------------------------

def _nft_loss(netns: Netns, ifname: str, loss: float) -> None:
    """An nft rule dropping ``loss`` percent of the packets arriving on ``ifname`` (0: none).

    Arriving, not leaving: a netfilter drop of a packet the namespace itself sends fails
    the sender's send() with EPERM, which real loss never does.
    """
    chain = "in_" + ifname.replace("-", "_").replace(".", "_")
    t = f"inet {_NFT_TABLE}"
    base = (f"add table {t}\nadd chain {t} {chain} "
            "{ type filter hook prerouting priority -300 ; policy accept ; }\n")
    with Nft(netns=netns) as nft:
        if loss:
            threshold = round(loss * 10_000)           # of 1,000,000
            nft.run(base + f"flush chain {t} {chain}\n"
                    f'add rule {t} {chain} iifname "{ifname}" '
                    f"numgen random mod 1000000 < {threshold} drop\n")
            return
        nft.run(base + f"flush chain {t} {chain}\ndelete chain {t} {chain}\n")
        chains = [i for i in nft.json(f"list table {t}") if "chain" in i]
        if not chains:
            nft.run(f"delete table {t}\n")


def _iptables_queue(netns: Netns, ifname: str, queue: int, *, add: bool) -> None:
    """Add (or remove) the NFQUEUE rule for ``ifname`` in the namespace (iptables: nft has
    no ``queue`` expression without CONFIG_NFT_QUEUE, the xtables target works)."""
    path, fds = (f"/proc/self/fd/{netns}", (netns,)) if isinstance(netns, int) else (
        os.fspath(netns), ())
    rule = ["-t", "mangle", "POSTROUTING", "-o", ifname, "-j", "NFQUEUE",
            "--queue-num", str(queue), "--queue-bypass"]
    base = ["nsenter", f"--net={path}", "iptables", "-w"]

    def run(op: str) -> subprocess.CompletedProcess[str]:
        args = base + rule[:2] + [op] + rule[2:]
        try:
            return subprocess.run(args, capture_output=True, text=True, pass_fds=fds)
        except FileNotFoundError:
            raise EngineUnavailable("delay without tc netem needs nsenter and iptables "
                                    "(apt-get install util-linux iptables)") from None

    if add:
        if run("-C").returncode != 0:
            done = run("-A")
            if done.returncode != 0:
                raise NetworkError(f"iptables NFQUEUE rule in {netns}: {done.stderr.strip()}")
        return
    while run("-C").returncode == 0:
        done = run("-D")
        if done.returncode != 0:
            raise NetworkError(f"iptables NFQUEUE rule in {netns}: {done.stderr.strip()}")


# nfnetlink_queue, from linux/netfilter/nfnetlink_queue.h
_NETLINK_NETFILTER = 12
_NFQ_PACKET, _NFQ_VERDICT, _NFQ_CONFIG = 0x300, 0x301, 0x302
_NFQA_PACKET_HDR, _NFQA_VERDICT_HDR = 1, 2
_NFQA_CFG_CMD, _NFQA_CFG_PARAMS, _NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
_NFQA_CFG_MASK, _NFQA_CFG_FLAGS = 4, 5
_NFQA_CFG_F_FAIL_OPEN = 1
_CMD_BIND = 1
_COPY_META = 1
_NF_ACCEPT = 1
_NLM_F_REQUEST, _NLM_F_ACK = 1, 4
_NLMSG_ERROR = 2


def _attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def _nfmsg(kind: int, queue: int, attrs: bytes, flags: int, seq: int = 0) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


class _Delayer:
    """Holds the packets NFQUEUE'd on one queue of a namespace and accepts each when due."""

    def __init__(self, netns: Netns, queue: int, delay: float, jitter: float) -> None:
        self.delay, self.jitter, self.queue = delay, jitter, queue
        self.sock = call_in_netns(netns, lambda: socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_NETFILTER))
        try:
            self.sock.bind((0, 0))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self._config(_attr(_NFQA_CFG_CMD, struct.pack("=BxH", _CMD_BIND, 0)))
            self._config(_attr(_NFQA_CFG_PARAMS, struct.pack(">IB", 0, _COPY_META))
                         + _attr(_NFQA_CFG_QUEUE_MAXLEN, struct.pack(">I", 10_000))
                         + _attr(_NFQA_CFG_MASK, struct.pack(">I", _NFQA_CFG_F_FAIL_OPEN))
                         + _attr(_NFQA_CFG_FLAGS, struct.pack(">I", _NFQA_CFG_F_FAIL_OPEN)))
        except BaseException:
            self.sock.close()
            raise
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="pydock-delay", daemon=True)
        self._thread.start()

    def _config(self, attrs: bytes) -> None:
        self.sock.send(_nfmsg(_NFQ_CONFIG, self.queue, attrs, _NLM_F_REQUEST | _NLM_F_ACK))
        reply = self.sock.recv(4096)
        length, kind = struct.unpack_from("=IH", reply)
        if kind == _NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", reply, 16)
            if code:
                raise NetworkError(f"NFQUEUE {self.queue}: {os.strerror(-code)}"
                                   + (" (another process delays this interface)"
                                      if -code == errno.EBUSY else ""))

    def _packets(self, data: bytes) -> Iterator[int]:
        offset = 0
        while offset + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, offset)
            if length < 16:
                return
            if kind == _NFQ_PACKET:
                pos = offset + 20                       # nlmsghdr + nfgenmsg
                while pos + 4 <= offset + length:
                    size, atype = struct.unpack_from("=HH", data, pos)
                    if size < 4:
                        break
                    if atype & 0x7FFF == _NFQA_PACKET_HDR:
                        yield struct.unpack_from(">I", data, pos + 4)[0]
                        break
                    pos += (size + 3) & ~3
            offset += (length + 3) & ~3

    def _accept(self, packet_id: int) -> None:
        verdict = _attr(_NFQA_VERDICT_HDR, struct.pack(">II", _NF_ACCEPT, packet_id))
        try:
            self.sock.send(_nfmsg(_NFQ_VERDICT, self.queue, verdict, _NLM_F_REQUEST))
        except OSError:
            pass                                    # the packet is gone (queue flushed)

    def _run(self) -> None:
        due: list[tuple[float, int]] = []
        while not self._stop:
            timeout = max(0.0, due[0][0] - time.monotonic()) if due else None
            ready, _, _ = select.select([self.sock.fileno(), self._wake_r], [], [], timeout)
            if self.sock.fileno() in ready:
                try:
                    data = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    data = b""
                except OSError:
                    data = b""                      # ENOBUFS: the kernel dropped messages
                now = time.monotonic()
                for packet_id in self._packets(data):
                    wait = self.delay + (random.uniform(-self.jitter, self.jitter)
                                         if self.jitter else 0.0)
                    heapq.heappush(due, (now + max(0.0, wait), packet_id))
            now = time.monotonic()
            while due and due[0][0] <= now:
                self._accept(heapq.heappop(due)[1])
        for _, packet_id in due:                    # on stop, let the held packets go
            self._accept(packet_id)

    def stop(self) -> None:
        self._stop = True
        os.write(self._wake_w, b"x")
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self.sock.close()


_delayers: dict[tuple[int, int, str], _Delayer] = {}
_delayers_lock = threading.Lock()


def _ns_key(netns: Netns, ifname: str) -> tuple[int, int, str]:
    st = os.fstat(netns) if isinstance(netns, int) else os.stat(netns)
    return st.st_dev, st.st_ino, ifname


# -- the API -------------------------------------------------------------------------------

def apply(netns: Netns, ifname: str = "eth0", *, delay: Value = None, jitter: Value = None,
          loss: Value = None, duplicate: Value = None, corrupt: Value = None,
          rate: Value = None, hold: Literal["thread", "process"] = "thread",
          watch: int | None = None, owner: str = "") -> Faults:
    """Set the faults of the traffic leaving ``ifname`` in ``netns`` (replacing earlier ones).

    Without netem, the delay is held by a thread of this process (``hold="thread"``) or
    by a ``pydock-delay`` process that ends when process ``watch`` does (``"process"``;
    ``owner`` is shown on its command line, e.g. the container's directory).
    """
    faults = parse_faults(delay=delay, jitter=jitter, loss=loss, duplicate=duplicate,
                          corrupt=corrupt, rate=rate)
    if hold == "process" and not watch:
        raise UsageError("hold='process' needs watch=PID (the process the delay ends with)")
    try:
        key = _ns_key(netns, ifname)
    except OSError as exc:
        raise NetworkError(f"no network namespace {netns}: {exc.strerror}") from None
    clear(netns, ifname)
    if not faults:
        return faults
    if netem_available() and _apply_netem(netns, ifname, faults):
        return faults
    if faults.duplicate or faults.corrupt:
        raise EngineUnavailable("duplicate and corrupt need the tc netem qdisc, which this "
                                "kernel lacks (CONFIG_NET_SCH_NETEM); delay, jitter, loss "
                                "and rate work without it")
    try:
        index = _ifindex(netns, ifname)
        if faults.rate is not None:
            rate_bytes = faults.rate // 8
            _root_qdisc(netns, index, "tbf", rate=rate_bytes,
                        burst=max(rate_bytes // 100, 3200), latency=100_000)
        if faults.loss:
            _nft_loss(netns, ifname, faults.loss)
        if faults.delay:
            with _delayers_lock:
                queue = _queue_of(index)
                if hold == "process":
                    assert watch is not None
                    _spawn_keeper(netns, key, queue, faults, watch, owner)
                else:
                    _delayers[key] = _Delayer(netns, queue, faults.delay, faults.jitter)
                _iptables_queue(netns, ifname, queue, add=True)
    except BaseException:
        clear(netns, ifname)
        raise
    return faults


def _apply_netem(netns: Netns, ifname: str, faults: Faults) -> bool:
    """One root netem qdisc; False (and remembered) when the kernel turns out to lack it."""
    global _netem
    options: dict[str, Any] = {
        "delay": round(faults.delay * 1e6), "jitter": round(faults.jitter * 1e6),
        "loss": faults.loss, "duplicate": faults.duplicate,
        "prob_corrupt": faults.corrupt, "limit": 10_000,
    }
    if faults.rate is not None:
        options["rate"] = faults.rate // 8
    try:
        _root_qdisc(netns, _ifindex(netns, ifname), "netem", **options)
    except _NoSuchQdisc:
        _netem = False
        return False
    return True


def clear(netns: Netns, ifname: str = "eth0") -> None:
    """Remove every fault of ``ifname`` in ``netns`` (a no-op when there is none)."""
    try:
        key = _ns_key(netns, ifname)
    except OSError as exc:
        raise NetworkError(f"no network namespace {netns}: {exc.strerror}") from None
    index = _ifindex(netns, ifname)
    _root_qdisc(netns, index, None)
    with _delayers_lock:
        delayer = _delayers.pop(key, None)
        kept = _keeper_file(key).exists()
        if delayer is None and not kept and netem_available():
            return
        # also the rule of a delayer whose process died (with --queue-bypass it is inert)
        _iptables_queue(netns, ifname, _queue_of(index), add=False)
        if delayer is not None:
            delayer.stop()
        if kept:
            _stop_keeper(_keeper_file(key))
    try:
        _nft_loss(netns, ifname, 0.0)
    except NftError as exc:
        raise NetworkError(f"removing the loss rule of {ifname} in {netns}: {exc}") from None


# -- the delay held by a process of its own (hold="process") --------------------------------

_children: dict[int, subprocess.Popen[bytes]] = {}   # keepers this process started


def keepers_dir() -> Path:
    """Where keepers are recorded: ``<net state>/delay/<netns dev>-<ino>-<ifname>.json``."""
    from .network_ipam import state_dir
    return state_dir() / "delay"


def _keeper_file(key: tuple[int, int, str]) -> Path:
    dev, ino, ifname = key
    return keepers_dir() / f"{dev}-{ino}-{ifname}.json"


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[3])


def _spawn_keeper(netns: Netns, key: tuple[int, int, str], queue: int, faults: Faults,
                  watch: int, owner: str) -> None:
    """Start a ``pydock-delay`` process holding ``queue`` in ``netns``; returns once it
    is bound (its error, e.g. EBUSY, raised here), recorded under keepers_dir()."""
    from ...procs import proc_start_time
    fd = netns if isinstance(netns, int) else os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    cmd = [sys.executable, "-S", "-m", "pydock.backends.native.faults", "--netns-fd",
           str(fd), "--queue", str(queue), "--delay", repr(faults.delay), "--jitter",
           repr(faults.jitter), "--watch", str(watch), "--ready-fd", str(ready_w)]
    if owner:
        cmd += ["--owner", owner]
    cmd += ["--record", str(_keeper_file(key))]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_package_root(),
                                                      env.get("PYTHONPATH")]))
    try:
        proc = subprocess.Popen(cmd, pass_fds=(fd, ready_w), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    finally:
        os.close(ready_w)
        if not isinstance(netns, int):
            os.close(fd)
    try:
        with os.fdopen(ready_r, "rb") as f:
            said = f.read().decode(errors="replace")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if said != "ok":
        proc.wait()
        raise NetworkError(f"delay on {netns}: {said or 'the pydock-delay process died'}")
    _children[proc.pid] = proc
    # reaped when it ends by itself (its container exited): no zombie in a long process
    threading.Thread(target=proc.wait, name="pydock-delay-reaper", daemon=True).start()
    keepers_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
    path = _keeper_file(key)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"pid": proc.pid, "start": proc_start_time(proc.pid),
                               "watch": watch, "watch_start": proc_start_time(watch),
                               "owner": owner}))
    os.rename(tmp, path)


def _stop_keeper(path: Path) -> None:
    """End the keeper recorded in ``path`` (its held packets go out) and forget it."""
    from ...procs import proc_start_time
    try:
        doc = json.loads(path.read_text())
        pid, start = int(doc["pid"]), doc["start"]
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)
        return
    if proc_start_time(pid) == start:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            pidfd = -1
        if pidfd >= 0:
            try:
                os.kill(pid, signal.SIGTERM)
                if not select.select([pidfd], [], [], 10)[0]:
                    os.kill(pid, signal.SIGKILL)
                    select.select([pidfd], [], [], 10)
            except ProcessLookupError:
                pass
            finally:
                os.close(pidfd)
    child = _children.pop(pid, None)
    if child is not None:
        child.wait()
    path.unlink(missing_ok=True)


def sweep_keepers() -> list[str]:
    """End keepers whose watched process is gone (they end by themselves; this is for a
    keeper that could not), and forget dead ones.  Returns what was done."""
    from ...procs import proc_start_time
    done = []
    try:
        paths = sorted(keepers_dir().glob("*.json"))
    except OSError:
        return []
    for path in paths:
        try:
            doc = json.loads(path.read_text())
            pid, watch = int(doc["pid"]), int(doc["watch"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        keeper_alive = proc_start_time(pid) == doc.get("start")
        if keeper_alive and proc_start_time(watch) == doc.get("watch_start"):
            continue
        if keeper_alive:
            done.append(f"delay process {pid} of {doc.get('owner') or path.stem}")
        _stop_keeper(path)
    return done


def _keeper_main(argv: list[str] | None = None) -> None:
    """``pydock-delay``: hold an NFQUEUE of a network namespace until SIGTERM or until
    the watched process exits."""
    parser = argparse.ArgumentParser(prog="pydock-delay")
    parser.add_argument("--netns-fd", type=int, required=True)
    parser.add_argument("--queue", type=int, required=True)
    parser.add_argument("--delay", type=float, required=True)
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--watch", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--owner", default="")
    parser.add_argument("--record", type=Path)
    args = parser.parse_args(argv)
    from .syscalls import set_process_name
    set_process_name(b"pydock-delay")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        watched = os.pidfd_open(args.watch)
        delayer = _Delayer(args.netns_fd, args.queue, args.delay, args.jitter)
    except Exception as exc:                        # reported by the parent's NetworkError
        said = str(exc) if isinstance(exc, (OSError, PydockError)) else repr(exc)
        os.write(args.ready_fd, said.encode() or b"failed")
        sys.exit(1)
    finally:
        os.close(args.netns_fd)
    os.write(args.ready_fd, b"ok")
    os.close(args.ready_fd)
    while True:
        try:
            ready, _, _ = select.select([watched, wake_r], [], [])
        except InterruptedError:
            continue
        if ready:
            break
    delayer.stop()
    try:
        if args.record and json.loads(args.record.read_text())["pid"] == os.getpid():
            args.record.unlink()
    except (OSError, ValueError, KeyError):
        pass


if __name__ == "__main__":
    _keeper_main()

