"""Published ports of native containers: host-port reservation, nftables DNAT, sweep.

(What ``-p``/``-P`` mean is pydock/ports.py, pure.)

Reservation: ``reserve(spec) -> (sock, port)`` binds a socket on HOST_IP:PORT (port 0 lets
the kernel choose, from ``ip_local_port_range`` as Docker does).  The bound socket IS the
reservation: no other process can take the port while it is open, and two processes
choosing at once never get the same port.  The engine reserves at start (as Docker does)
and hands the sockets to the container's monitor over SCM_RIGHTS, which holds them while
the container runs.  A taken port raises ``PortAllocated`` (``Bind for 0.0.0.0:8080
failed: port is already allocated``).

Forwarding: ``PortForwarder(table="pydock")`` owns the nftables table ``ip <table>`` (nat
chains ``output``, ``prerouting``, ``postrouting``) through libnftables (nftables.py):

- ``add(mappings, bridge=...)`` DNATs HOST_IP:HOST_PORT to CONTAINER_IP:CONTAINER_PORT for
  connections from host processes (output) and from elsewhere (prerouting); host_ip
  0.0.0.0 means every local address (``fib daddr type local``), 127.0.0.1 included.
  Connections from 127.0.0.0/8 are masqueraded to the bridge's address, and
  ``route_localnet`` is set on the bridge so the kernel routes them there at all.  In the
  same batch it deletes rules of other containers on the same host port: whoever holds
  the reservation owns the port, so such rules are stale (their monitor was SIGKILLed).
- ``mappings()`` reads the installed ``Mapping``s back; each rule's comment names them
  (``pydock <container id> <proto> <host ip>:<port> <container ip>:<port>``).
- ``remove_for(container_id)``, ``sweep(keep_ids)`` and ``remove_all()`` remove rules
  per container, for every container not kept, or the whole table.

The engine's side: ``forward`` installs a starting container's rules (under the network
registry's lock, so a sweep never sees rules without their lease), its monitor calls
``unforward`` when the container exits, and ``sweep_published`` (from the network sweep:
every CLI command, ``pydock gc``) removes the rules of containers whose address lease is
gone (a dead monitor).  It costs nothing while the marker ``<net state>/published`` is
absent, i.e. until a port was ever published.

DNAT'd traffic from the host leaves through the OUTPUT path straight to the bridge, so it
never crosses FORWARD (where Docker's policy is DROP); the tests check this with dockerd
running.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

from pydock.errors import NetworkError, PortAllocated, UsageError
from pydock.models import PortSpec

from .nftables import Nft, NftError

if TYPE_CHECKING:
    from .network_ipam import NetState

Proto = Literal["tcp", "udp"]
PROTOS: tuple[Proto, ...] = ("tcp", "udp")
ANY_IP = "0.0.0.0"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_TABLE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


@dataclass(frozen=True)
class Mapping:
    """A published port once its host port is known, as installed for one container."""

    container_id: str
    proto: Proto
    host_ip: str
    host_port: int
    container_ip: str
    container_port: int

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"

    def comment(self) -> str:
        return (f"pydock {self.container_id} {self.proto} {self.host_ip}:{self.host_port} "
                f"{self.container_ip}:{self.container_port}")

    @classmethod
    def from_comment(cls, text: str) -> Mapping | None:
        parts = text.split()
        if len(parts) != 5 or parts[0] != "pydock" or parts[2] not in PROTOS:
            return None
        try:
            hip, hport = parts[3].rsplit(":", 1)
            cip, cport = parts[4].rsplit(":", 1)
            return cls(parts[1], cast(Proto, parts[2]), hip, int(hport), cip, int(cport))
        except ValueError:
            return None


# -- reservation ---------------------------------------------------------------------------

def reserve(spec: PortSpec) -> tuple[socket.socket, int]:
    """Bind a socket on the spec's host address and port (or a free one): (socket, port).

    Keep the socket open while the mapping exists: it is the reservation.
    """
    kind = socket.SOCK_STREAM if spec.proto == "tcp" else socket.SOCK_DGRAM
    if spec.host_port is None:
        candidates: Sequence[int] = (0,)
    else:
        candidates = range(spec.host_port, (spec.host_port_end or spec.host_port) + 1)
    for port in candidates:
        sock = socket.socket(socket.AF_INET, kind | socket.SOCK_CLOEXEC)
        try:
            sock.bind((spec.host_ip, port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                continue
            if exc.errno == errno.EADDRNOTAVAIL:
                raise NetworkError(f"cannot publish {spec.key} on {spec.host_ip}: "
                                   "no such address on this host") from None
            raise NetworkError(f"cannot publish {spec.key} on {spec.host_ip}:{port}: "
                               f"{exc.strerror}") from None
        return sock, sock.getsockname()[1]
    ports = str(spec.host_port) + (f"-{spec.host_port_end}" if spec.host_port_end else "")
    raise PortAllocated(f"Bind for {spec.host_ip}:{ports} failed: port is already allocated")


# -- forwarding ----------------------------------------------------------------------------

_CHAINS = (("output", "output", -100), ("prerouting", "prerouting", -100),
           ("postrouting", "postrouting", 100))


def enable_route_localnet(bridge: str) -> None:
    """Let the kernel route 127.0.0.0/8-sourced packets out of ``bridge`` (before masquerade)."""
    _check_ifname(bridge)
    path = f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet"
    try:
        with open(path) as f:
            if f.read().strip() == "1":
                return
        with open(path, "w") as f:
            f.write("1")
    except FileNotFoundError:
        raise NetworkError(f"no bridge {bridge!r} on this host (for route_localnet)") from None


def _check_ifname(name: str) -> None:
    if not _IFNAME.fullmatch(name):
        raise UsageError(f"invalid interface name: {name!r}")


def _check(m: Mapping) -> None:
    if not _ID.fullmatch(m.container_id):
        raise UsageError(f"invalid container id for a port mapping: {m.container_id!r}")
    for ip in (m.host_ip, m.container_ip):
        try:
            if ipaddress.ip_address(ip).version != 4:
                raise ValueError(ip)
        except ValueError:
            raise UsageError(f"not an IPv4 address: {ip!r} (port mapping {m.comment()})") from None
    if m.proto not in PROTOS or not (0 < m.host_port < 65536 and 0 < m.container_port < 65536):
        raise UsageError(f"invalid port mapping: {m.comment()}")


def _conflict(old: Mapping, new: Mapping) -> bool:
    """Whether installing ``new`` makes the rule of ``old`` stale (another container's
    rule on the same host port)."""
    return (old.container_id != new.container_id and old.proto == new.proto and old.host_port == new.host_port
            and (old.host_ip == new.host_ip or ANY_IP in (old.host_ip, new.host_ip)))


class PortForwarder:
    """The nftables table ``ip <table>`` holding every published port's DNAT rules."""

    def __init__(self, *, table: str = "pydock", nft: Nft | None = None) -> None:
        if not _TABLE.fullmatch(table):
            raise UsageError(f"invalid nftables table name: {table!r}")
        self.table = table
        self._nft = nft if nft is not None else Nft()

    def _rules_for(self, m: Mapping, bridge: str) -> list[str]:
        t, note = f"ip {self.table}", f'comment "{m.comment()}"'
        dnat = f"{m.proto} dport {m.host_port} dnat to {m.container_ip}:{m.container_port} {note}"
        loopback = ipaddress.ip_address(m.host_ip).is_loopback
        if m.host_ip == ANY_IP:
            match = "fib daddr type local"
        else:
            match = f"ip daddr {m.host_ip}"
        rules = [f"add rule {t} output {match} {dnat}"]
        if not loopback:
            rules.append(f"add rule {t} prerouting {match} {dnat}")
        if loopback or m.host_ip == ANY_IP:
            rules.append(f'add rule {t} postrouting oifname "{bridge}" ip saddr 127.0.0.0/8 '
                         f"ip daddr {m.container_ip} {m.proto} dport {m.container_port} "
                         f"masquerade {note}")
        return rules

    def _base(self) -> list[str]:
        lines = [f"add table ip {self.table}"]
        for name, hook, prio in _CHAINS:
            lines.append(f"add chain ip {self.table} {name} "
                         f"{{ type nat hook {hook} priority {prio} ; policy accept ; }}")
        return lines

    def add(self, mappings: Iterable[Mapping], *, bridge: str) -> None:
        """Install the DNAT rules of ``mappings`` (one atomic batch); ``bridge`` is where
        the containers' addresses live.  The same batch deletes other containers' rules on
        the same host ports (stale: the caller holds those ports' reservations)."""
        mappings = list(mappings)
        _check_ifname(bridge)
        for m in mappings:
            _check(m)
        if not mappings:
            return
        if any(m.host_ip == ANY_IP or ipaddress.ip_address(m.host_ip).is_loopback
               for m in mappings):
            enable_route_localnet(bridge)
        for _attempt in range(5):
            stale = [(c, h) for c, h, old in self._listing()
                     if any(_conflict(old, m) for m in mappings)]
            lines = self._base()
            lines += [f"delete rule ip {self.table} {c} handle {h}" for c, h in stale]
            for m in mappings:
                lines += self._rules_for(m, bridge)
            try:
                self._nft.run("\n".join(lines) + "\n")
            except NftError as exc:     # a concurrent remover took a stale rule: list again
                if stale and "No such file or directory" in str(exc):
                    continue
                raise
            return
        raise NetworkError(f"nft table ip {self.table}: rules keep changing while adding")

    def _listing(self) -> list[tuple[str, int, Mapping]]:
        """(chain, handle, mapping) of every rule of ours; empty when there is no table."""
        try:
            doc = self._nft.json(f"list table ip {self.table}")
        except NftError as exc:
            if "No such file or directory" in str(exc):
                return []
            raise
        found = []
        for item in doc:
            rule = item.get("rule")
            if rule is None:
                continue
            m = Mapping.from_comment(rule.get("comment", ""))
            if m is not None:
                found.append((rule["chain"], int(rule["handle"]), m))
        return found

    def mappings(self) -> list[Mapping]:
        """The installed mappings (one per output rule), in rule order."""
        return [m for chain, _, m in self._listing() if chain == "output"]

    def _remove(self, doomed: Collection[str] | None, keep: Collection[str] | None) -> set[str]:
        for _attempt in range(5):
            rules = [(c, h, m) for c, h, m in self._listing()
                     if (doomed is not None and m.container_id in doomed)
                     or (keep is not None and m.container_id not in keep)]
            if not rules:
                return set()
            batch = "".join(f"delete rule ip {self.table} {c} handle {h}\n" for c, h, _ in rules)
            try:
                self._nft.run(batch)
            except NftError as exc:         # a concurrent remover took some: list again
                if "No such file or directory" in str(exc):
                    continue
                raise
            return {m.container_id for _, _, m in rules}
        raise NetworkError(f"nft table ip {self.table}: rules keep changing while removing them")

    def remove_for(self, container_id: str) -> bool:
        """Remove a container's rules; whether there were any."""
        return bool(self._remove({container_id}, None))

    def sweep(self, keep_ids: Collection[str]) -> set[str]:
        """Remove the rules of every container not in ``keep_ids``; the ids removed."""
        return self._remove(None, set(keep_ids))

    def remove_all(self) -> None:
        """Delete the whole table (no error when it does not exist)."""
        self._nft.run(f"add table ip {self.table}\ndelete table ip {self.table}\n")

    def exists(self) -> bool:
        return any("table" in item for item in self._nft.json("list tables ip")
                   if item.get("table", {}).get("name") == self.table)

    def close(self) -> None:
        self._nft.close()

    def __enter__(self) -> PortForwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the engine's published ports -----------------------------------------------------------

Held = list[tuple[socket.socket, PortSpec, int]]    # reservation, what it is for, host port


def _marker() -> Path:
    """Exists once a port was published on this host (until a sweep finds no rule)."""
    from .network_ipam import state_dir
    return state_dir() / "published"


MAX_PORTS = 190  # the sockets go to the monitor in one message (launch.MAX_FDS)


def reserve_all(specs: Iterable[PortSpec]) -> Held:
    """Reserve every spec's host port (all or none: PortAllocated closes the others)."""
    specs = list(specs)
    if len(specs) > MAX_PORTS:
        raise UsageError(f"{len(specs)} published ports: the native engine publishes at "
                         f"most {MAX_PORTS} per container")
    held: Held = []
    try:
        for spec in specs:
            sock, port = reserve(spec)
            held.append((sock, spec, port))
    except BaseException:
        release_all(held)
        raise
    return held


def release_all(held: Held) -> None:
    for sock, _, _ in held:
        sock.close()


def forward(container_id: str, held: Held, *, container_ip: str, bridge: str) -> list[Mapping]:
    """Install the DNAT rules of a starting container's reserved ports (to its address
    on ``bridge``), under the network registry's lock: a sweep, which holds that lock,
    sees the container's lease whenever it sees these rules."""
    from . import network_ipam as ipam
    mappings = [Mapping(container_id, cast(Proto, spec.proto), spec.host_ip, port,
                        container_ip, spec.container_port) for _, spec, port in held]
    with ipam.locked(write=False):
        _marker().touch()
        with PortForwarder() as fw:
            fw.remove_for(container_id)  # of an earlier run whose monitor died
            fw.add(mappings, bridge=bridge)
    return mappings


def unforward(container_id: str) -> bool:
    """Remove a container's rules (its monitor does so when it exits); whether any were."""
    if not _marker().exists():
        return False
    with PortForwarder() as fw:
        return fw.remove_for(container_id)


def sweep_published(st: NetState) -> list[str]:
    """Remove the rules of containers without a live address lease (their monitor died:
    a SIGKILL); the whole table once no rule is left.  The caller holds the registry's
    lock (``st``); rules to addresses outside its networks are another registry's
    ($PYDOCK_NET_STATE).  Nothing to do, and no libnftables loaded, until a port was
    published."""
    marker = _marker()
    if not marker.exists():
        return []
    live = {(lease.cid, lease.ip) for lease in st.live_leases() if lease.cid}
    ours = [ipaddress.IPv4Network(n.subnet) for n in st.networks() if n.subnet]
    with PortForwarder() as fw:
        rules = fw._listing()
        doomed = {m.container_id for _, _, m in rules
                  if (m.container_id, m.container_ip) not in live
                  and any(ipaddress.IPv4Address(m.container_ip) in net for net in ours)}
        removed = fw._remove(doomed, None) if doomed else set()
        if not [r for r in rules if r[2].container_id not in removed]:
            fw.remove_all()
            marker.unlink(missing_ok=True)
    return [f"published ports of container {cid[:12]}" for cid in sorted(removed)]


def ports_doc(mappings: Iterable[Mapping]) -> dict[str, list[list[object]]]:
    """``{"80/tcp": [["127.0.0.1", 49153]]}`` (JSON-ready, for state.json)."""
    doc: dict[str, list[list[object]]] = {}
    for m in mappings:
        doc.setdefault(m.key, []).append([m.host_ip, m.host_port])
    return doc
