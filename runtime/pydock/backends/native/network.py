"""The network manager of a client process: networks, a pool of ready network namespaces,
attaching containers at start, hosts files, connect/disconnect and the network sweep.

A container on a bridge network gets, at start, one network namespace fd: taken from the
pool (made ahead of time by the ``LinkWorker`` thread: loopback up, a veth with its host
end on the bridge and ``eth0`` inside, address, default route via the bridge), else made
on the spot.  The monitor hands the fd to the container's PID 1, which joins it with
``setns`` before its workload runs; the namespace then lives exactly as long as the
container's processes, and its veth with it.  pyroute2 is imported (by network_link.py)
only when a namespace or bridge is made or removed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import InvalidState, NetworkError, UsageError
from . import network_hosts as hosts
from . import network_ipam as ipam
from .network_ipam import BUILTIN, DEFAULT_NAME, Lease, NetState, Network

if TYPE_CHECKING:
    from .network_link import LinkWorker
    from .state import ContainerDir

ENDPOINTS = "networks.json"   # in a container's directory: the networks it is connected to


@dataclass(frozen=True)
class EndpointConfig:
    """A container's membership of a network, as configured (not yet an address)."""

    network: str                       # name or id, resolved at start
    aliases: tuple[str, ...] = ()


def endpoints(cdir: ContainerDir) -> list[EndpointConfig]:
    """The networks a container is configured on: ``--network`` (+ aliases), then what
    ``network connect`` added; [] for ``none`` and ``host``."""
    try:
        with open(cdir.path / ENDPOINTS) as f:
            return [EndpointConfig(e["network"], tuple(e.get("aliases") or ()))
                    for e in json.load(f)]
    except FileNotFoundError:
        pass
    spec = cdir.spec
    if spec.network in ("none", "host"):
        return []
    return [EndpointConfig(spec.network, tuple(getattr(spec, "network_aliases", ()) or ()))]


def _save_endpoints(cdir: ContainerDir, eps: Sequence[EndpointConfig]) -> None:
    from .state import write_json
    write_json(cdir.path / ENDPOINTS, [{"network": e.network, "aliases": list(e.aliases)}
                                       for e in eps])


def is_networked(network: str) -> bool:
    return network not in ("none", "host")


def default_gateway() -> str:
    return str(ipam.default_subnet().network_address + 1)


class PoolEntry:
    """A ready network namespace (held by ``fd``) with ``eth0`` on ``network``."""

    def __init__(self, fd: int, network: Network, ip: str, host_ifname: str) -> None:
        self.fd, self.network, self.ip, self.host_ifname = fd, network, ip, host_ifname

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class NetworkManager:
    """Networks and network namespaces for one client (a NativeBackend).

    Lock order: the host-wide registry lock is never held while waiting for the worker
    thread (whose pool refills take that lock themselves).
    """

    def __init__(self, store_root: Path, store_tag: str, *, pool_size: int = 2) -> None:
        self.store = str(store_root.resolve())
        self.tag = store_tag
        self.pool_size = pool_size
        self._worker: LinkWorker | None = None
        self._pools: dict[str, list[PoolEntry]] = {}
        self._refilling: set[str] = set()
        self._ready: set[str] = set()   # networks whose bridge and rules were checked
        self._resolved: dict[str, Network] = {}
        self._wanted: set[str] = set()  # pools drawn from since the last refill()
        self._lock = threading.RLock()
        self._closed = False
        self._workers: list[LinkWorker] = []
        # An unclosed manager that is garbage-collected drops its pool all the same.
        self._finalizer = weakref.finalize(self, _drop_pool, self._pools, self._workers)

    # -- plumbing ---------------------------------------------------------------------------
    def worker(self) -> LinkWorker:
        with self._lock:
            if self._worker is None:
                from .network_link import LinkWorker
                self._worker = LinkWorker()
                self._workers.append(self._worker)
            return self._worker

    def close(self) -> None:
        """Drop the pool (its namespaces and veths go with the fds) and its leases."""
        with self._lock:
            self._closed = True
            self._worker = None
        self._finalizer()

    def _host_ifname(self) -> str:
        return f"{ipam.VETH_PREFIX}{self.tag[:6]}{os.urandom(3).hex()}"

    # -- networks ---------------------------------------------------------------------------
    def _default(self, st: NetState) -> Network:
        """The shared default network's record, made (or remade for a changed
        $PYDOCK_SUBNET while nothing uses it) under the lock."""
        want = ipam.default_subnet()
        net = st.default()
        if net is not None and net.subnet == str(want):
            return net
        if net is not None:
            if st.live_leases(net.id):
                raise NetworkError(
                    f"the default network's bridge {net.bridge} has subnet {net.subnet}, "
                    f"but {ipam.POOL_ENV} asks for {want}: stop the containers on it first, "
                    f"or unset {ipam.POOL_ENV}")
            self._remove_bridge(st, net)
        net = ipam.new_network(DEFAULT_NAME, want, store=None)
        st.add_network(net)
        return net

    def resolve(self, ref: str) -> Network:
        """A network by name or id (``bridge``: the default one), its bridge ready (checked
        once per manager; a network removed since fails at ``take``)."""
        hit = self._resolved.get(ref)
        if hit is not None:
            return hit
        with ipam.locked() as st:
            net = self._default(st) if ref in ("bridge", "default") else \
                st.find(ref, self.store)
            if net.id not in self._ready:
                self._ensure_bridge(st, net)
        self._resolved[ref] = net
        return net

    def _ensure_bridge(self, st: NetState, net: Network) -> None:
        """Bridge and firewall rules of ``net`` (under the lock; once per manager)."""
        from . import network_firewall as fw
        from .network_link import ensure_bridge, host_ipr
        st.mark_firewall(net.bridge, True)
        st.save()  # recorded before installed: a sweep can then always find the rules
        ipr = host_ipr()
        try:
            ensure_bridge(ipr, net)
        finally:
            ipr.close()
        fw.install(net.bridge)
        self._ready.add(net.id)

    def _remove_bridge(self, st: NetState, net: Network) -> None:
        _remove_bridge(st, net)
        self._ready.discard(net.id)
        self._resolved = {k: v for k, v in self._resolved.items() if v.id != net.id}

    def remove_idle_default(self) -> str | None:
        """Remove the default network's bridge (and with the last bridge, the firewall
        table) while no container or pool holds an address on it; the next networked
        container makes it again.  Returns the bridge removed, if any."""
        with ipam.locked() as st:
            return _remove_idle_default(st)

    def networks(self) -> list[Network]:
        """The builtin networks and this store's user networks."""
        st = ipam.peek()
        default = _default_or_planned(st)
        mine = sorted((n for n in st.networks() if n.store == self.store),
                      key=lambda n: n.name)
        return [default, ipam.pseudo_network("host"), ipam.pseudo_network("none"), *mine]

    def network(self, ref: str) -> Network:
        if ref in ("host", "none"):
            return ipam.pseudo_network(ref)
        if ref in ("bridge", "default"):
            return self.resolve(ref)
        return ipam.peek().find(ref, self.store)

    def create_network(self, name: str, *, subnet: str | None = None,
                       gateway: str | None = None,
                       labels: dict[str, str] | None = None) -> Network:
        """A user network with its own bridge; ``subnet`` default: a free /24 of the pool."""
        from .network_link import host_ipr, host_routes
        if name in BUILTIN or name == "default":
            raise UsageError(f"network name {name!r} is reserved (a builtin network)")
        _check_network_name(name)
        want = _parse_subnet(subnet) if subnet else None
        if gateway is not None:
            _check_gateway(gateway, want)
        with ipam.locked() as st:
            if any(n.name == name and n.store == self.store for n in st.networks()):
                raise NetworkError(f"network with name {name} already exists")
            if want is not None:
                # the default network's range stays its own while its bridge is removed
                for other in [_default_or_planned(st), *st.networks()]:
                    if other.subnet and want.overlaps(ipaddress.IPv4Network(other.subnet)):
                        raise NetworkError(f"subnet {want} overlaps network {other.name} "
                                           f"({other.subnet}, bridge {other.bridge})")
            ipr = host_ipr()
            try:
                routes = [(r, dev) for r, dev in host_routes(ipr)
                          if not dev.startswith(ipam.VETH_PREFIX)]
            finally:
                ipr.close()
            for route, dev in routes:
                if want is not None and want.overlaps(route):
                    raise NetworkError(
                        f"subnet {want} clashes with the host route {route}"
                        f"{' dev ' + dev if dev else ''}: give another --subnet (or set "
                        f"{ipam.POOL_ENV} for the automatic ones)")
            chosen = want or st.free_subnet([r for r, _ in routes])
            net = ipam.new_network(name, chosen, store=self.store, labels=labels,
                                   gateway=gateway)
            st.add_network(net)
            try:
                self._ensure_bridge(st, net)
            except BaseException:
                self._remove_bridge(st, net)
                st.save()
                raise
        return net

    def remove_network(self, ref: str) -> Network:
        """Remove a user network and its bridge; refused while containers use it."""
        with ipam.locked() as st:
            if ref in ("bridge", "default", "host", "none"):
                raise NetworkError(f"{ref} is a pre-defined network and cannot be removed")
            net = st.find(ref, self.store)
            if net.store != self.store:
                raise NetworkError(f"{net.name} is a pre-defined network and cannot be "
                                   "removed")
            users = sorted({lease.name or lease.cid[:12]
                            for lease in st.live_leases(net.id) if lease.cid})
            if users:
                raise NetworkError(
                    f"network {net.name} has active endpoints (containers "
                    f"{', '.join(users)}): stop or remove them, or `pydock network "
                    f"disconnect {net.name} CONTAINER` first")
            with self._lock:
                entries = self._pools.pop(net.id, [])
            for e in entries:
                e.close()
            self._remove_bridge(st, net)
        return net

    # -- the pool ---------------------------------------------------------------------------
    def _build(self, w: LinkWorker, ipr: Any, net: Network) -> PoolEntry:
        """On the worker thread: a new namespace with eth0 on ``net`` (its lease held by
        this process)."""
        from .network_link import add_interface, new_netns
        with ipam.locked() as st:
            if st.network(net.id) is None:
                if net.bridge != ipam.DEFAULT_BRIDGE:
                    raise NetworkError(f"network {net.name} was removed")
                # another session removed the default bridge, idle at its end: remake it
                old, net = net.id, self._default(st)
                self._ensure_bridge(st, net)
                with self._lock:
                    self._resolved = {k: net if v.id == old else v
                                      for k, v in self._resolved.items()}
            ip = st.allocate(net, ipam.holder_of(os.getpid()))
            host_if = self._host_ifname()
            st.update_lease(net.id, ip, ifname=host_if, dev="eth0")
        try:
            fd = new_netns(w, ipr)
            try:
                add_interface(w, ipr, fd, net, ip, host_if, "eth0", True)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            with ipam.locked() as st:
                st.release(net.id, ip)
            raise
        return PoolEntry(fd, net, ip, host_if)

    def take(self, net: Network) -> PoolEntry:
        """A ready namespace on ``net``: from the pool, else made now.  The pool refills
        at ``refill()`` (after the container started: refilling costs CPU time that a
        start would otherwise wait for)."""
        entry = None
        with self._lock:
            pool = self._pools.get(net.id) or []
            if pool:
                entry = pool.pop(0)
            self._wanted.add(net.id)
        if entry is None:
            entry = self.worker().call(self._build, net)
        return entry

    def refill(self) -> None:
        """Refill the pools that ``take`` drew from."""
        with self._lock:
            wanted, self._wanted = self._wanted, set()
        for net_id in wanted:
            net = next((n for n in self._resolved.values() if n.id == net_id), None)
            if net is not None:
                self._refill(net)

    def prefill(self, ref: str = DEFAULT_NAME) -> None:
        """Start filling the pool of network ``ref`` (a session that will start containers)."""
        if self.pool_size > 0:
            self._refill(self.resolve(ref))

    def _refill(self, net: Network) -> None:
        if self.pool_size <= 0:
            return
        with self._lock:
            if self._closed or net.id in self._refilling or \
                    len(self._pools.get(net.id, [])) >= self.pool_size:
                return
            self._refilling.add(net.id)
        self.worker().submit(self._refill_one, net, background=True)

    def _refill_one(self, w: LinkWorker, ipr: Any, net: Network) -> None:
        """A worker job (background priority): one entry, then again until full."""
        try:
            entry = self._build(w, ipr, net)
        except Exception:  # noqa: BLE001 - a failed refill shows when the entry is needed
            with self._lock:
                self._refilling.discard(net.id)
            return
        with self._lock:
            closed = self._closed
            more = False
            if not closed:
                pool = self._pools.setdefault(net.id, [])
                pool.append(entry)
                more = len(pool) < self.pool_size
            if not more:
                self._refilling.discard(net.id)
        if closed:
            entry.close()
            with ipam.locked() as st:
                st.release(net.id, entry.ip)
        elif more:
            w.submit(self._refill_one, net, background=True)

    # -- containers -------------------------------------------------------------------------
    def attach(self, cdir: ContainerDir, holder_pid: int) -> int:
        """Network namespace fd for a container about to start (its monitor ``holder_pid``
        holds the leases): eth0 on its first network, eth1... on the others; leases and
        hosts files updated.  The caller closes the fd once the container joined it."""
        eps = endpoints(cdir)
        if not eps:
            raise InvalidState(f"container {cdir.config.get('name')} is on no network")
        nets = [self.resolve(e.network) for e in eps]
        self.release(cdir.id)  # a restart: the old addresses are free
        entry = self.take(nets[0])
        # entry.network: the default network made again if another session removed it
        plugged = [(entry.network, entry.ip, entry.host_ifname, "eth0")]
        try:
            for i, net in enumerate(nets[1:], 1):
                plugged.append(self._plug(entry.fd, net, f"eth{i}", default_route=False))
            self._bind(cdir, list(zip(eps, plugged, strict=True)), holder_pid)
        except BaseException:
            entry.close()
            with ipam.locked() as st:
                for net, ip, _, _ in plugged:
                    st.release(net.id, ip)
            raise
        fd, entry.fd = entry.fd, -1
        return fd

    def _plug(self, netns: int, net: Network, dev: str, *, default_route: bool
              ) -> tuple[Network, str, str, str]:
        """Another interface into an existing namespace (connect, a second network)."""
        from .network_link import add_interface
        with ipam.locked() as st:
            ip = st.allocate(net, ipam.holder_of(os.getpid()))
        host_if = self._host_ifname()
        try:
            self.worker().call(add_interface, netns, net, ip, host_if, dev, default_route)
        except BaseException:
            with ipam.locked() as st:
                st.release(net.id, ip)
            raise
        return net, ip, host_if, dev

    def _bind(self, cdir: ContainerDir,
              plugged: Sequence[tuple[EndpointConfig, tuple[Network, str, str, str]]],
              holder_pid: int) -> None:
        """Give the leases to the container (held by its monitor), write hosts files."""
        spec = cdir.spec
        holder = ipam.holder_of(holder_pid)
        with ipam.locked() as st:
            for ep, (net, ip, host_if, dev) in plugged:
                if not st.update_lease(
                        net.id, ip, cid=cdir.id, name=str(cdir.config.get("name", "")),
                        aliases=list(ep.aliases), hostname=spec.hostname,
                        hosts=str(cdir.rw_dir / "hosts"), ifname=host_if, dev=dev,
                        **holder):
                    raise NetworkError(f"the address {ip} of network {net.name} was taken "
                                       "back (network removed meanwhile?)")
            self._rewrite_hosts(st, cdir.id, {net.id for _, (net, *_) in plugged})

    def _rewrite_hosts(self, st: NetState, cid: str, net_ids: set[str]) -> None:
        """Rewrite the hosts file of ``cid`` and of every live container sharing one of
        ``net_ids`` that is a user network."""
        user_nets = {n for n, d in st.doc["networks"].items() if d.get("store")}
        mine0 = [lease for lease in st.leases() if lease.cid == cid]
        if not user_nets & ({lease.network for lease in mine0} | net_ids):
            # Only on the default network: no peers, only its own hosts file.
            if mine0:
                self._write_hosts(st, mine0, [])
            return
        live = st.live_leases()
        touched = {cid} | {lease.cid for lease in live
                           if lease.cid and lease.network in net_ids & user_nets}
        for target in touched:
            mine = sorted((lease for lease in live if lease.cid == target),
                          key=lambda lease: lease.dev)
            if not mine:
                continue
            nets = {lease.network for lease in mine} & user_nets
            peers = [(lease.ip, (lease.name, *lease.aliases, lease.hostname))
                     for lease in live if lease.cid and lease.cid != target
                     and lease.network in nets]
            self._write_hosts(st, mine, peers)

    def _write_hosts(self, st: NetState, mine: list[Lease],
                     peers: list[tuple[str, tuple[str, ...]]]) -> None:
        mine = sorted(mine, key=lambda lease: lease.dev)
        own = [(lease.ip, (mine[0].hostname, lease.name, *lease.aliases)) for lease in mine]
        first = st.network(mine[0].network)
        extra = hosts.resolve_extra(_extra_hosts(mine[0].hosts),
                                    first.gateway if first else default_gateway())
        hosts.write_in_place(mine[0].hosts, hosts.hosts_text(own=own, peers=peers,
                                                             extra=extra))

    def release(self, cid: str) -> None:
        """Free the addresses of container ``cid`` and update its peers' hosts files."""
        if not any(lease.cid == cid for lease in ipam.peek().leases()):
            return
        with ipam.locked() as st:
            gone = st.release_container(cid)
            nets = {lease.network for lease in gone}
            for lease in st.live_leases():
                if lease.cid and lease.network in nets:
                    self._rewrite_hosts(st, lease.cid, set())

    def connect(self, cdir: ContainerDir, ref: str, *, aliases: Sequence[str] = (),
                pid: int = 0, holder_pid: int = 0) -> Network:
        """Connect a container to a network; if it runs (``pid``: its PID 1, ``holder_pid``
        its monitor) it gets the interface now, else at its next start."""
        spec = cdir.spec
        if not is_networked(spec.network):
            raise NetworkError(f"container {cdir.config.get('name')} uses network "
                               f"{spec.network}: it cannot be connected to other networks")
        net = self.resolve(ref)
        if aliases and net.store is None:
            raise UsageError("network-scoped aliases are supported only for containers in "
                             "user defined networks")
        eps = endpoints(cdir)
        if net.id in {self._id_of(e.network) for e in eps}:
            raise NetworkError(f"container {cdir.config.get('name')} is already connected "
                               f"to network {net.name}")
        ep = EndpointConfig(net.name, tuple(aliases))
        if pid:
            used = {lease.dev for _, lease in addresses(cdir.id)}
            dev = next(f"eth{i}" for i in range(1, 256) if f"eth{i}" not in used)
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                plugged = self._plug(fd, net, dev, default_route=not used)
            finally:
                os.close(fd)
            try:
                self._bind(cdir, [(ep, plugged)], holder_pid)
            except BaseException:
                delete_links([plugged[2]])
                with ipam.locked() as st:
                    st.release(net.id, plugged[1])
                raise
        _save_endpoints(cdir, [*eps, ep])
        return net

    def disconnect(self, cdir: ContainerDir, ref: str) -> Network:
        """Disconnect a container from a network (its interface goes now if it runs)."""
        net = self.network(ref)
        eps = endpoints(cdir)
        keep = [e for e in eps if self._id_of(e.network) != net.id]
        if len(keep) == len(eps):
            raise NetworkError(f"container {cdir.config.get('name')} is not connected to "
                               f"network {net.name}")
        with ipam.locked() as st:
            mine = [lease for lease in st.leases(net.id) if lease.cid == cdir.id]
            for lease in mine:
                st.release(net.id, lease.ip)
            for lease in st.live_leases(net.id):
                if lease.cid:
                    self._rewrite_hosts(st, lease.cid, set())
            self._rewrite_hosts(st, cdir.id, set())
        delete_links([lease.ifname for lease in mine])
        _save_endpoints(cdir, keep)
        return net

    def _id_of(self, ref: str) -> str | None:
        try:
            st = ipam.peek()
            net = st.default() if ref in ("bridge", "default") else st.find(ref, self.store)
            return net.id if net else None
        except NetworkError:
            return None


def _drop_pool(pools: dict[str, list[PoolEntry]], workers: list[LinkWorker]) -> None:
    for w in workers:
        w.close()
    workers.clear()
    entries = [e for pool in pools.values() for e in pool]
    pools.clear()
    for e in entries:
        e.close()
    if entries:
        with ipam.locked() as st:
            for e in entries:
                st.release(e.network.id, e.ip)


def addresses(cid: str) -> list[tuple[Network, Lease]]:
    """The live addresses of container ``cid``, eth0 first (a lock-free read)."""
    st = ipam.peek()
    out = []
    for lease in st.leases():
        if lease.cid == cid and ipam.alive(lease.pid, lease.start):
            net = st.network(lease.network)
            if net is not None:
                out.append((net, lease))
    out.sort(key=lambda pair: pair[1].dev)
    return out


def _extra_hosts(hosts_path: str) -> list[tuple[str, str]]:
    """The container's ``--add-host`` entries, from its config beside its hosts file."""
    try:
        with open(Path(hosts_path).parent / "config.json") as f:
            return [(str(h), str(i)) for h, i in json.load(f)["spec"].get("extra_hosts") or ()]
    except (OSError, ValueError, KeyError):
        return []


def delete_links(names: Sequence[str]) -> None:
    """Delete links (bridges, veth host ends) from the calling thread (host namespace)."""
    names = [n for n in names if n and os.path.exists(f"/sys/class/net/{n}")]
    if not names:
        return
    from .network_link import delete_link, host_ipr
    ipr = host_ipr()
    try:
        for name in names:
            delete_link(ipr, name)
    finally:
        ipr.close()


def bridge_links() -> list[str]:
    """Links named like user networks' bridges (pdk-...)."""
    try:
        return [n for n in os.listdir("/sys/class/net") if n.startswith(ipam.BRIDGE_PREFIX)]
    except OSError:
        return []


def _check_network_name(name: str) -> None:
    import re
    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}", name):
        raise UsageError(f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                         "are allowed")


def _parse_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise UsageError(f"invalid subnet {text!r}: {exc} (e.g. 10.213.50.0/24)") from None
    if net.prefixlen > 29:
        raise UsageError(f"subnet {text} is too small: use a /29 or larger")
    return net


def _check_gateway(gateway: str, subnet: ipaddress.IPv4Network | None) -> None:
    try:
        gw = ipaddress.IPv4Address(gateway)
    except ValueError:
        raise UsageError(f"invalid gateway {gateway!r}") from None
    if subnet is None or gw not in subnet:
        raise UsageError(f"gateway {gateway} must be inside --subnet")
    if gw != subnet.network_address + 1:
        raise UsageError("only the subnet's first address can be the gateway (the "
                         "native engine's allocator skips it)")


def sweep_networks() -> list[str]:
    """Prune leases of dead holders; remove bridges of networks whose store is gone or
    whose test session (label ``pydock.session``) has ended, bridges of ours that no network
    owns, firewall rules of bridges that are gone, and published ports' rules of containers
    without a lease.  Cheap when there is nothing to do (no pyroute2 import).  Returns what
    was removed."""
    if not (ipam.state_dir() / "state.json").exists() and not bridge_links():
        return []
    removed: list[str] = []
    with ipam.locked() as st:
        removed += [f"lease {lease.ip} of {lease.name or 'a pool'}" for lease in st.prune()]
        from .sweep import session_gone
        doomed = [n for n in st.networks() if n.store and (
            not os.path.isdir(n.store)
            or (session_gone(dict(n.labels).get("pydock.session"))  # a killed test session's
                and not any(lease.cid for lease in st.live_leases(n.id))))]
        known = {n.bridge for n in st.networks() if n not in doomed}
        stale = [b for b in bridge_links() if b not in known]
        stale += [n.bridge for n in doomed if os.path.exists(f"/sys/class/net/{n.bridge}")]
        delete_links(stale)
        removed += [f"bridge {b}" for b in stale]
        for net in doomed:
            st.drop_network(net.id)
            removed.append(f"network {net.name}")
        idle = _remove_idle_default(st)  # its last user was killed before its end
        if idle is not None:
            removed.append(f"bridge {idle}")
        from .portmap import sweep_published
        removed += sweep_published(st)  # DNAT rules of containers whose lease is gone
        gone_fw = [b for b in st.firewalled() if not os.path.exists(f"/sys/class/net/{b}")]
        if gone_fw:
            from . import network_firewall as fw
            for bridge in gone_fw:
                fw.uninstall(bridge)
                st.mark_firewall(bridge, False)
                removed.append(f"firewall rules of {bridge}")
    return removed


def _default_or_planned(st: NetState) -> Network:
    """The default network, or, while it is not made (removed when idle), the one the next
    networked container makes (no id)."""
    return st.default() or ipam.Network(
        id="", name=DEFAULT_NAME, subnet=str(ipam.default_subnet()),
        gateway=default_gateway(), bridge=ipam.DEFAULT_BRIDGE)


def _remove_bridge(st: NetState, net: Network) -> None:
    """A network's bridge, firewall rules and record (under the lock)."""
    from . import network_firewall as fw
    delete_links([net.bridge])
    fw.uninstall(net.bridge)
    st.mark_firewall(net.bridge, False)
    st.drop_network(net.id)


def _remove_idle_default(st: NetState) -> str | None:
    """The default network's bridge, removed when no live lease holds an address on it
    (under the lock); returns it, if removed."""
    net = st.default()
    if net is None or st.live_leases(net.id):
        return None
    _remove_bridge(st, net)
    return net.bridge


def members(net_id: str) -> list[Lease]:
    """The containers (live leases) on a network, by name."""
    return sorted((lease for lease in ipam.peek().live_leases(net_id) if lease.cid),
                  key=lambda lease: lease.name)
