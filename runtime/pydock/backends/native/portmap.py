"""Published ports: Docker's ``-p``/``-P`` rules, host-port reservation, nftables DNAT.

Parsing (pure)::

    parse_publish("127.0.0.1:8080:80/udp")  -> (PortSpec(80, "udp", "127.0.0.1", 8080),)
    parse_publish("8000-8001:80-81")        -> two PortSpecs, 8000->80 and 8001->81
    parse_publish("8000-8010:80")           -> one PortSpec choosing a host port in 8000-8010
    publish_all({"80/tcp": {}})             -> the -P specs for an image's ExposedPorts

``PortSpec.host_port`` is None when the host port is to be chosen.  Bad input raises
``UsageError`` with Docker's wording (``invalid containerPort: x``, ``invalid proto: x``...).

Reservation: ``reserve(spec) -> (sock, port)`` binds a socket on HOST_IP:PORT (port 0 lets
the kernel choose, from ``ip_local_port_range`` as Docker does).  The bound socket IS the
reservation: no other process can take the port while it is open, so keep it open for the
mapping's lifetime (the engine hands it to the container's monitor over SCM_RIGHTS).  A
taken port raises ``PortAllocated`` (``Bind for 0.0.0.0:8080 failed: port is already
allocated``).

Forwarding: ``PortForwarder(table="pydock")`` owns the nftables table ``ip <table>`` (nat
chains ``output``, ``prerouting``, ``postrouting``) through libnftables (nftables.py):

- ``add(mappings, bridge=...)`` DNATs HOST_IP:HOST_PORT to CONTAINER_IP:CONTAINER_PORT for
  connections from host processes (output) and from elsewhere (prerouting); host_ip
  0.0.0.0 means every local address (``fib daddr type local``), 127.0.0.1 included.
  Connections from 127.0.0.0/8 are masqueraded to the bridge's address, and
  ``route_localnet`` is set on the bridge so the kernel routes them there at all.
- ``mappings()`` reads the installed ``Mapping``s back; each rule's comment names them
  (``pydock <container id> <proto> <host ip>:<port> <container ip>:<port>``).
- ``remove_for(container_id)``, ``sweep(keep_ids)`` and ``remove_all()`` remove rules
  per container, for every container not kept, or the whole table.

DNAT'd traffic from the host leaves through the OUTPUT path straight to the bridge, so it
never crosses FORWARD (where Docker's policy is DROP); the tests check this with dockerd
running.  ``format_port`` renders ``pydock port NAME [PORT]`` lines like ``docker port``.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
from collections.abc import Collection, Iterable, Sequence
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from typing import Literal, cast

from pydock.errors import NetworkError, PortAllocated, UsageError

from .nftables import Nft, NftError

Proto = Literal["tcp", "udp"]
PROTOS: tuple[Proto, ...] = ("tcp", "udp")
ANY_IP = "0.0.0.0"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_TABLE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


@dataclass(frozen=True)
class PortSpec:
    """One ``-p`` request: container port and protocol, host address and port (None: choose).

    With ``host_port_end`` the host port is chosen in ``host_port..host_port_end``.
    """

    container_port: int
    proto: Proto = "tcp"
    host_ip: str = ANY_IP
    host_port: int | None = None
    host_port_end: int | None = None

    @property
    def key(self) -> str:
        """``"80/tcp"``: the ExposedPorts / NetworkSettings.Ports key."""
        return f"{self.container_port}/{self.proto}"


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


# -- parsing -------------------------------------------------------------------------------

def _port_range(text: str) -> tuple[int, int]:
    """``"80"`` or ``"8000-8010"`` -> (start, end); ValueError when not ports."""
    start_s, sep, end_s = text.partition("-")
    if not start_s.isdigit() or (sep and not end_s.isdigit()):
        raise ValueError(text)
    start, end = int(start_s), int(end_s) if sep else int(start_s)
    if start > 65535 or end > 65535 or end < start:
        raise ValueError(text)
    return start, end


def parse_publish(text: str) -> tuple[PortSpec, ...]:
    """``[IP:][HOSTPORT:]CONTAINERPORT[/PROTO]`` (ports or ranges) -> its PortSpecs."""
    head, _, proto_s = text.partition("/")
    parts = head.split(":")
    if len(parts) == 1:
        ip, host, container = "", "", parts[0]
    elif len(parts) == 2:
        ip, host, container = "", parts[0], parts[1]
    else:
        ip, host, container = ":".join(parts[:-2]), parts[-2], parts[-1]
    if not container:
        raise UsageError(f"no port specified: {text}<empty>")
    proto = (proto_s or "tcp").lower()
    if proto == "sctp":
        raise UsageError(f"invalid proto: sctp in {text!r} (pydock publishes tcp and udp)")
    if proto not in PROTOS:
        raise UsageError(f"invalid proto: {proto} (in -p {text})")
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    if ip:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            raise UsageError(f"invalid IP address: {ip} (in -p {text})") from None
        if addr.version == 6:
            raise UsageError(f"IPv6 host address {ip} in -p {text}: pydock publishes on IPv4 only")
        ip = str(addr)
    try:
        cstart, cend = _port_range(container)
    except ValueError:
        raise UsageError(f"invalid containerPort: {container} (in -p {text})") from None
    if cstart == 0:
        raise UsageError(f"invalid containerPort: {container} (in -p {text})")
    hstart = hend = 0
    if host:
        try:
            hstart, hend = _port_range(host)
        except ValueError:
            raise UsageError(f"invalid hostPort: {host} (in -p {text})") from None
        if cend - cstart != hend - hstart and cend != cstart:
            raise UsageError("invalid ranges specified for container and host Ports: "
                             f"{container} and {host}")
    host_ip = ip or ANY_IP
    p = cast(Proto, proto)
    if cstart == cend and hend != hstart:           # one port, a host range to choose in
        return (PortSpec(cstart, p, host_ip, hstart or None, hend if hstart else None),)
    return tuple(
        PortSpec(cstart + i, p, host_ip, (hstart + i) if hstart else None)
        for i in range(cend - cstart + 1)
    )


def publish_all(exposed: Iterable[str] | MappingABC[str, object], *,
                host_ip: str = ANY_IP) -> tuple[PortSpec, ...]:
    """``-P``: a chosen host port for each of an image's ExposedPorts keys (``"80/tcp"``)."""
    specs: list[PortSpec] = []
    for key in exposed:
        port, _, proto = str(key).partition("/")
        proto = (proto or "tcp").lower()
        if proto not in PROTOS:
            continue                          # sctp: not published (pydock has no sctp NAT)
        try:
            start, end = _port_range(port)
        except ValueError:
            raise UsageError(f"invalid exposed port: {key!r}") from None
        specs.extend(PortSpec(n, cast(Proto, proto), host_ip) for n in range(start, end + 1)
                     if n)
    return tuple(sorted(set(specs), key=lambda s: (s.container_port, s.proto)))


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
        the containers' addresses live."""
        mappings = list(mappings)
        _check_ifname(bridge)
        for m in mappings:
            _check(m)
        if not mappings:
            return
        if any(m.host_ip == ANY_IP or ipaddress.ip_address(m.host_ip).is_loopback
               for m in mappings):
            enable_route_localnet(bridge)
        lines = self._base()
        for m in mappings:
            lines += self._rules_for(m, bridge)
        self._nft.run("\n".join(lines) + "\n")

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


# -- `pydock port` -------------------------------------------------------------------------

def format_port(mappings: Iterable[Mapping | tuple[str, str, int]], *, name: str,
                private: str | None = None) -> list[str]:
    """The lines ``docker port NAME [PRIVATE_PORT[/PROTO]]`` prints.

    Without ``private``: ``80/tcp -> 0.0.0.0:49153`` for each mapping, sorted by port and
    protocol; with it: ``0.0.0.0:49153`` for the matching ones, or a ``NetworkError`` with
    Docker's ``No public port '80/tcp' published for NAME``.  A mapping may also be given
    as ``("80/tcp", host_ip, host_port)``.
    """
    rows: list[tuple[int, str, str]] = []
    for m in mappings:
        key, hip, hport = (m.key, m.host_ip, m.host_port) if isinstance(m, Mapping) else m
        port, _, proto = key.partition("/")
        rows.append((int(port), proto, f"{hip}:{hport}"))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    if private is None:
        return [f"{port}/{proto} -> {addr}" for port, proto, addr in rows]
    port_s, _, proto = private.partition("/")
    proto = (proto or "tcp").lower()
    if not port_s.isdigit():
        raise UsageError(f"invalid port: {private!r} (expected PORT or PORT/PROTO)")
    found = [addr for port, p, addr in rows if port == int(port_s) and p == proto]
    if not found:
        raise NetworkError(f"No public port '{int(port_s)}/{proto}' published for {name}")
    return found
