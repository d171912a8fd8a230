"""The host-wide network registry and IP leases: one JSON file under a file lock (stdlib only).

Bridges and subnets are host-wide objects, so their bookkeeping is too: every store, every
process (pytest-xdist workers, CLI commands) reads and writes ``<state dir>/state.json``
while it holds an exclusive ``flock`` on ``<state dir>/lock``.  The state dir
(``$PYDOCK_NET_STATE``, default ``/dev/shm/pydock-net``) is on tmpfs: gone at reboot like
the bridges it describes, and a write there costs a fraction of one on disk::

    {"networks": {id: {name, subnet, gateway, bridge, store, created, labels}},
     "leases":   {network id: {ip: {cid, name, aliases, hostname, hosts, ifname, pid, start}}},
     "next":     {network id: offset of the next address to try},
     "firewall": [bridges whose firewall rules are installed]}

A lease is held while its holder process lives (``pid`` + start time): a pool's client
while the address waits in a pool, then the monitor of the container that uses it (a
container never outlives its monitor).  A lease of a dead holder is free, so a SIGKILLed
process leaks no address; it is pruned at the next allocation scan or sweep.  Addresses are
handed out round-robin, so a just-freed one (its network namespace may still be tearing
down, peers may still cache its MAC) is not reused at once.

The default network ``bridge`` (bridge ``pdk0``) is shared by all stores; user networks
belong to one store (their names are unique within it) and get bridges ``pdk-<id>``.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import NetworkError, NetworkNotFound, UsageError

DEFAULT_POOL = "10.213.0.0/16"
POOL_ENV = "PYDOCK_SUBNET"
STATE_ENV = "PYDOCK_NET_STATE"
DEFAULT_NAME = "bridge"
DEFAULT_BRIDGE = "pdk0"
BUILTIN = ("bridge", "host", "none")
BRIDGE_PREFIX = "pdk-"      # user networks' bridges: pdk-<11 hex of the id> (15 chars)
VETH_PREFIX = "pdk"         # veth host ends: pdk<6 hex store tag><6 random hex> (15 chars)


def state_dir() -> Path:
    return Path(os.environ.get(STATE_ENV) or "/dev/shm/pydock-net")


def address_pool() -> ipaddress.IPv4Network:
    """The range the project's subnets come from (``$PYDOCK_SUBNET``, default 10.213.0.0/16):
    the default network takes its first /20 (or all of it, if smaller), user networks /24s
    of the rest."""
    text = os.environ.get(POOL_ENV) or DEFAULT_POOL
    try:
        pool = ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        raise UsageError(f"invalid {POOL_ENV}={text!r}: use an IPv4 subnet such as "
                         f"{DEFAULT_POOL}") from None
    if pool.prefixlen > 28:
        raise UsageError(f"{POOL_ENV}={text!r} is too small: use a /28 or larger")
    return pool


def default_subnet() -> ipaddress.IPv4Network:
    pool = address_pool()
    return pool if pool.prefixlen >= 20 else next(pool.subnets(new_prefix=20))


def mac_of(ip: str) -> str:
    """Docker's scheme: 02:42 and the four bytes of the IPv4 address (stable per address, so
    a peer's stale ARP entry for a reused address still points at the right MAC)."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


@dataclass(frozen=True)
class Network:
    """A bridge network: its name, subnet, gateway (the bridge's address) and bridge."""

    id: str
    name: str
    subnet: str
    gateway: str
    bridge: str
    store: str | None = None      # the owning store; None: the shared default network
    created: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    driver: str = "bridge"        # "bridge", or "host" / "null" for the builtin pseudo ones

    @property
    def builtin(self) -> bool:
        return self.name in BUILTIN and (self.store is None)

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen if self.subnet else 0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "subnet": self.subnet,
                "gateway": self.gateway, "bridge": self.bridge, "store": self.store,
                "created": self.created, "labels": dict(self.labels), "driver": self.driver}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Network:
        return cls(id=doc["id"], name=doc["name"], subnet=doc["subnet"],
                   gateway=doc["gateway"], bridge=doc["bridge"], store=doc.get("store"),
                   created=doc.get("created", ""),
                   labels=tuple(sorted((doc.get("labels") or {}).items())),
                   driver=doc.get("driver", "bridge"))


def pseudo_network(name: str) -> Network:
    """``host`` and ``none``, listed like Docker lists them (no bridge, no subnet)."""
    ident = {"host": "686f7374", "none": "6e6f6e65"}[name] * 8
    return Network(id=ident, name=name, subnet="", gateway="", bridge="",
                   driver="host" if name == "host" else "null")


@dataclass(frozen=True)
class Lease:
    """An address of a network held by a pool or a container."""

    network: str
    ip: str
    cid: str = ""
    name: str = ""
    aliases: tuple[str, ...] = ()
    hostname: str = ""
    hosts: str = ""               # the container's hosts file (rewritten as peers change)
    ifname: str = ""              # host end of its veth
    dev: str = ""                 # its name in the container: eth0, eth1...
    pid: int = 0
    start: int | None = None

    @classmethod
    def from_json(cls, network: str, ip: str, doc: dict[str, Any]) -> Lease:
        return cls(network=network, ip=ip, cid=doc.get("cid", ""), name=doc.get("name", ""),
                   aliases=tuple(doc.get("aliases") or ()), hostname=doc.get("hostname", ""),
                   hosts=doc.get("hosts", ""), ifname=doc.get("ifname", ""),
                   dev=doc.get("dev", ""), pid=int(doc.get("pid") or 0), start=doc.get("start"))


def alive(pid: int, start: int | None) -> bool:
    from ...procs import proc_start_time
    return bool(pid) and proc_start_time(pid) == start


def holder_of(pid: int) -> dict[str, Any]:
    from ...procs import proc_start_time
    return {"pid": pid, "start": proc_start_time(pid)}


class NetState:
    """The registry, read under the host-wide lock; ``save()`` writes it back atomically."""

    def __init__(self, doc: dict[str, Any], path: Path) -> None:
        self.doc = doc
        self.path = path
        self.dirty = False
        for key in ("networks", "leases", "next"):
            doc.setdefault(key, {})
        doc.setdefault("firewall", [])

    # -- networks ---------------------------------------------------------------------------
    def networks(self) -> list[Network]:
        return [Network.from_json(d) for d in self.doc["networks"].values()]

    def network(self, net_id: str) -> Network | None:
        doc = self.doc["networks"].get(net_id)
        return Network.from_json(doc) if doc else None

    def default(self) -> Network | None:
        for net in self.networks():
            if net.bridge == DEFAULT_BRIDGE:
                return net
        return None

    def find(self, ref: str, store: str) -> Network:
        """A network by name (in ``store``, or the default one), id or unique id prefix."""
        if ref in ("bridge", "default"):
            net = self.default()
            if net is None:
                raise NetworkNotFound(ref)
            return net
        mine = [n for n in self.networks() if n.store == store or n.store is None]
        for net in mine:
            if net.name == ref or net.id == ref:
                return net
        if len(ref) >= 3 and all(c in "0123456789abcdef" for c in ref):
            hits = [n for n in mine if n.id.startswith(ref)]
            if len(hits) == 1:
                return hits[0]
        raise NetworkNotFound(ref)

    def add_network(self, net: Network) -> None:
        self.doc["networks"][net.id] = net.to_json()
        self.dirty = True

    def drop_network(self, net_id: str) -> None:
        self.doc["networks"].pop(net_id, None)
        self.doc["leases"].pop(net_id, None)
        self.doc["next"].pop(net_id, None)
        self.dirty = True

    def free_subnet(self, taken: Sequence[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
        """The first /24 of the address pool after the default network's range that overlaps
        no registered network and none of ``taken`` (the host's routes)."""
        pool = address_pool()
        default = default_subnet()
        used = [ipaddress.IPv4Network(n.subnet) for n in self.networks() if n.subnet]
        for candidate in pool.subnets(new_prefix=max(24, pool.prefixlen)):
            if candidate.overlaps(default):
                continue
            if any(candidate.overlaps(u) for u in [*used, *taken]):
                continue
            return candidate
        raise NetworkError(f"no free /24 left in {POOL_ENV}={pool} for a new network: remove "
                           "networks (`pydock network rm`), give --subnet, or set "
                           f"{POOL_ENV} to a larger range")

    # -- leases -----------------------------------------------------------------------------
    def leases(self, net_id: str | None = None) -> list[Lease]:
        out = []
        for nid, table in self.doc["leases"].items():
            if net_id is None or nid == net_id:
                out += [Lease.from_json(nid, ip, doc) for ip, doc in table.items()]
        return out

    def live_leases(self, net_id: str | None = None) -> list[Lease]:
        return [lease for lease in self.leases(net_id) if alive(lease.pid, lease.start)]

    def allocate(self, net: Network, holder: dict[str, Any], *, ip: str | None = None) -> str:
        """Lease an address of ``net`` to ``holder`` (round-robin; a given ``ip`` must be
        free).  Leases of dead holders met on the way are reclaimed."""
        subnet = ipaddress.IPv4Network(net.subnet)
        table = self.doc["leases"].setdefault(net.id, {})
        first = int(subnet.network_address) + 2            # .1 is the gateway
        count = subnet.num_addresses - 3                  # minus network, gateway, broadcast
        if ip is not None:
            addr = ipaddress.IPv4Address(ip)
            if addr not in subnet or not first <= int(addr) < first + count:
                raise UsageError(f"address {ip} is not in network {net.name}'s range "
                                 f"{subnet} (gateway {net.gateway})")
            doc = table.get(ip)
            if doc and alive(int(doc.get("pid") or 0), doc.get("start")):
                raise NetworkError(f"address {ip} of network {net.name} is in use by "
                                   f"{doc.get('name') or 'a pool'}")
            table[ip] = dict(holder)
            self.dirty = True
            return ip
        offset = int(self.doc["next"].get(net.id, 0)) % count
        for i in range(count):
            candidate = str(ipaddress.IPv4Address(first + (offset + i) % count))
            doc = table.get(candidate)
            if doc and alive(int(doc.get("pid") or 0), doc.get("start")):
                continue
            table[candidate] = dict(holder)
            self.doc["next"][net.id] = (offset + i + 1) % count
            self.dirty = True
            return candidate
        raise NetworkError(f"network {net.name} ({subnet}) has no free address: "
                           f"{count} containers use it")

    def update_lease(self, net_id: str, ip: str, **fields: Any) -> bool:
        doc = self.doc["leases"].get(net_id, {}).get(ip)
        if doc is None:
            return False
        doc.update(fields)
        self.dirty = True
        return True

    def release(self, net_id: str, ip: str) -> None:
        if self.doc["leases"].get(net_id, {}).pop(ip, None) is not None:
            self.dirty = True

    def release_container(self, cid: str) -> list[Lease]:
        """Drop every lease of container ``cid``; returns them."""
        gone = [lease for lease in self.leases() if lease.cid == cid]
        for lease in gone:
            self.release(lease.network, lease.ip)
        return gone

    def prune(self) -> list[Lease]:
        """Drop leases whose holder died (a SIGKILLed client's pool, a dead monitor's)."""
        dead = [lease for lease in self.leases() if not alive(lease.pid, lease.start)]
        for lease in dead:
            self.release(lease.network, lease.ip)
        return dead

    # -- firewall bookkeeping ---------------------------------------------------------------
    def firewalled(self) -> list[str]:
        return list(self.doc["firewall"])

    def mark_firewall(self, bridge: str, installed: bool) -> None:
        fw = self.doc["firewall"]
        if installed and bridge not in fw:
            fw.append(bridge)
            self.dirty = True
        elif not installed and bridge in fw:
            fw.remove(bridge)
            self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        tmp = self.path.with_name(f".state.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(self.doc, f)
        os.rename(tmp, self.path)
        self.dirty = False


@contextmanager
def locked(*, write: bool = True) -> Iterator[NetState]:
    """The registry under the host-wide lock; saved on a normal exit when changed."""
    root = state_dir()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = root / "state.json"
        try:
            with open(path) as f:
                doc = json.load(f)
        except FileNotFoundError:
            doc = {}
        except ValueError:
            raise NetworkError(f"network state {path} is corrupt: remove it (no container "
                               "may be on a pydock network meanwhile)") from None
        state = NetState(doc, path)
        yield state
        if write:
            state.save()
    finally:
        os.close(fd)


def peek() -> NetState:
    """A lock-free read of the registry (a snapshot; never saved)."""
    path = state_dir() / "state.json"
    try:
        with open(path) as f:
            doc = json.load(f)
    except (FileNotFoundError, ValueError):
        doc = {}
    return NetState(doc, path)


def new_network(name: str, subnet: ipaddress.IPv4Network, *, store: str | None,
                labels: dict[str, str] | None = None, gateway: str | None = None) -> Network:
    net_id = os.urandom(32).hex()
    bridge = DEFAULT_BRIDGE if store is None and name == DEFAULT_NAME else \
        BRIDGE_PREFIX + net_id[:11]
    gw = gateway or str(subnet.network_address + 1)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return Network(id=net_id, name=name, subnet=str(subnet), gateway=gw, bridge=bridge,
                   store=store, created=created, labels=tuple(sorted((labels or {}).items())))
