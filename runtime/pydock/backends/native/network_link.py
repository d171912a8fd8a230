"""Bridges, veths and network namespaces through netlink: the one module importing pyroute2.

All netlink work runs on one ``LinkWorker`` thread.  pyroute2 (0.9) binds a netlink socket
to the thread that first uses it, in that thread's network namespace at the time; the
worker first binds its host socket, then may ``unshare(CLONE_NEWNET)`` / ``setns`` to make
or enter a container's namespace (a fresh ``IPRoute`` then talks to that namespace), and
always returns to the host namespace afterwards.

A new namespace is held only by the fd this module returns: closing the last fd (or the
exit of the container that joined it) destroys it, its veth and the veth's host end.
"""

from __future__ import annotations

import fcntl
import ipaddress
import itertools
import os
import queue
import socket
import struct
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ...errors import NetworkError
from . import syscalls as sc
from .network_ipam import POOL_ENV, Network, mac_of

T = TypeVar("T")
RT_TABLE_MAIN = 254


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def _write_sysctl(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError:
        pass


class LinkWorker:
    """A thread that owns the netlink sockets; ``call(fn, ...)`` runs ``fn(ipr, ...)`` there.

    Jobs run by priority (foreground requests before pool refills), then in order.
    """

    def __init__(self) -> None:
        self._jobs: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._thread = threading.Thread(target=self._run, name="pydock-net", daemon=True)
        self._host_ns = -1
        self._ready = threading.Event()
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        self._host_ns = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        ipr = IPRoute()
        ipr.get_links(1)  # binds this thread's socket in the host namespace
        self._ready.set()
        while True:
            _, _, job = self._jobs.get()
            if job is None:
                break
            fn, args, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(self, ipr, *args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)
            finally:
                sc.setns(self._host_ns, sc.CLONE_NEWNET)
                # hold no reference to the job's owner while waiting for the next one
                del job, fn, args, fut
        ipr.close()
        os.close(self._host_ns)

    def submit(self, fn: Callable[..., T], *args: Any, background: bool = False) -> Future[T]:
        fut: Future[T] = Future()
        self._jobs.put((1 if background else 0, next(self._seq), (fn, args, fut)))
        return fut

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return self.submit(fn, *args).result()

    def close(self) -> None:
        """Stop after the queued jobs (a pool refill may be among them)."""
        self._jobs.put((2, next(self._seq), None))
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    def to_host(self) -> None:
        sc.setns(self._host_ns, sc.CLONE_NEWNET)


# -- host-side operations (any thread in the host namespace: not the worker's jobs) ------

def host_ipr() -> IPRoute:
    """A netlink socket for the calling thread (which must be in the host namespace)."""
    return IPRoute()


def host_routes(ipr: IPRoute) -> list[tuple[ipaddress.IPv4Network, str]]:
    """The host's IPv4 routes of the main table (but default routes), with their device."""
    names = {link["index"]: link.get("IFLA_IFNAME") for link in ipr.get_links()}
    out = []
    for r in ipr.get_routes(family=socket.AF_INET, table=RT_TABLE_MAIN):
        dst, plen = r.get("RTA_DST"), r["dst_len"]
        if not dst or plen == 0:
            continue
        out.append((ipaddress.IPv4Network(f"{dst}/{plen}", strict=False),
                    str(names.get(r.get("RTA_OIF"), "") or "")))
    return out


def check_clash(ipr: IPRoute, subnet: str, bridge: str) -> None:
    """NetworkError when a host route (not our bridge's) overlaps ``subnet``."""
    net = ipaddress.IPv4Network(subnet)
    for route, dev in host_routes(ipr):
        if dev != bridge and route.overlaps(net):
            raise NetworkError(
                f"subnet {subnet} of bridge {bridge} clashes with the host route {route}"
                f"{' dev ' + dev if dev else ''}: set {POOL_ENV} to a free range (default "
                "10.213.0.0/16), or give the network another --subnet")


def ensure_bridge(ipr: IPRoute, net: Network) -> bool:
    """Create the network's bridge with the gateway address, unless it exists; True if made.

    Its MAC is fixed (derived from the gateway address, like the containers'), so it never
    changes as ports come and go, and containers can know it in advance.
    """
    mac = mac_of(net.gateway)
    if link_exists(net.bridge):
        try:
            with open(f"/sys/class/net/{net.bridge}/address") as f:
                if f.read().strip() != mac:
                    ipr.link("set", index=ipr.link_lookup(ifname=net.bridge)[0], address=mac)
        except (OSError, IndexError, NetlinkError):
            pass
        return False
    check_clash(ipr, net.subnet, net.bridge)
    try:
        ipr.link("add", ifname=net.bridge, kind="bridge", br_stp_state=0,
                 br_forward_delay=0, address=mac)
    except NetlinkError as exc:
        if exc.code != 17:  # EEXIST: made meanwhile by another process
            raise NetworkError(f"cannot create bridge {net.bridge}: {exc.args[1]}") from None
        return False
    try:
        index = ipr.link_lookup(ifname=net.bridge)[0]
        _write_sysctl(f"/proc/sys/net/ipv6/conf/{net.bridge}/disable_ipv6", "1")
        ipr.addr("add", index=index, address=net.gateway, prefixlen=net.prefixlen)
        ipr.link("set", index=index, state="up")
    except NetlinkError as exc:
        delete_link(ipr, net.bridge)
        raise NetworkError(f"cannot set up bridge {net.bridge} ({net.subnet}): "
                           f"{exc.args[1]}") from None
    return True


def delete_link(ipr: IPRoute, name: str) -> None:
    """Delete a link (a bridge, or a veth by its host end: its peer goes with it)."""
    try:
        ipr.link("del", ifname=name)
    except NetlinkError as exc:
        if exc.code not in (19, 2):  # ENODEV, ENOENT: gone already
            raise NetworkError(f"cannot delete link {name}: {exc.args[1]}") from None


# -- worker jobs: fn(worker, its host IPRoute, ...) -----------------------------------------

def new_netns(w: LinkWorker, _ipr: IPRoute) -> int:
    """A new network namespace with loopback up, held by the returned fd (no process in it)."""
    sc.unshare(sc.CLONE_NEWNET)
    fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        # Interfaces made from now on get no IPv6 (no DAD, no router solicitations).
        _write_sysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")
        _set_up(b"lo")
    except BaseException:
        os.close(fd)
        raise
    finally:
        w.to_host()
    return fd


def add_interface(w: LinkWorker, ipr: IPRoute, netns: int, net: Network, ip: str,
                  host_ifname: str, ifname: str, default_route: bool) -> None:
    """A veth from ``net``'s bridge into the namespace ``netns``: ``ifname`` there, with
    ``ip``, its MAC derived from it, and (``default_route``) the default route via the
    bridge.  Nothing remains if it fails."""
    bridge = ipr.link_lookup(ifname=net.bridge)
    if not bridge:
        raise NetworkError(f"bridge {net.bridge} of network {net.name} is gone (removed "
                           "meanwhile?)")
    try:
        ipr.link("add", ifname=host_ifname, kind="veth", master=bridge[0], state="up",
                 peer={"ifname": ifname, "net_ns_fd": netns, "address": mac_of(ip)})
    except NetlinkError as exc:
        raise NetworkError(f"cannot create veth {host_ifname} on {net.bridge}: "
                           f"{exc.args[1]}") from None
    try:
        sc.setns(netns, sc.CLONE_NEWNET)
        _configure_inside(ifname.encode(), ip, net, default_route)
    except (NetlinkError, OSError) as exc:
        w.to_host()
        delete_link(ipr, host_ifname)
        raise NetworkError(f"cannot configure {ifname} ({ip}) of network {net.name}: "
                           f"{exc}") from None
    finally:
        w.to_host()
    try:  # the host's ARP entry for it, ahead of the first connect (a cache entry: it ages)
        _set_arp(net.bridge.encode(), ip, permanent=False)
    except OSError:
        pass


# -- inside a namespace: plain ioctls (a fraction of a netlink round trip through pyroute2) --

SIOCADDRT, SIOCGIFFLAGS, SIOCSIFFLAGS = 0x890B, 0x8913, 0x8914
SIOCSIFADDR, SIOCSIFNETMASK, SIOCSARP = 0x8916, 0x891C, 0x8955
IFF_UP, RTF_UP, RTF_GATEWAY, ATF_COM, ATF_PERM = 0x1, 0x1, 0x2, 0x02, 0x04


def _sockaddr_in(ip: str) -> bytes:
    return struct.pack("=H2s4s8x", socket.AF_INET, b"", socket.inet_aton(ip))


def _rtentry(dst: str, gateway: str, genmask: str, flags: int) -> bytes:
    """struct rtentry (64-bit): pad1, dst, gateway, genmask, flags, pad2, pad3, pad4,
    metric, dev (NULL: the kernel finds the device from the gateway), mtu, window, irtt."""
    return struct.pack("=Q16s16s16sHh4xQQh6xQQQH6x", 0, _sockaddr_in(dst),
                       _sockaddr_in(gateway), _sockaddr_in(genmask), flags, 0, 0, 0, 0,
                       0, 0, 0, 0)


def _ioctl(request: int, arg: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, request, arg)


def _set_up(ifname: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH22x", ifname, 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", ifname, flags | IFF_UP))


def _set_arp(ifname: bytes, ip: str, *, permanent: bool) -> None:
    """A neighbour entry: ``ip`` at its derived MAC (permanent, or reachable: it ages)."""
    mac = bytes.fromhex(mac_of(ip).replace(":", ""))
    req = (_sockaddr_in(ip) + struct.pack("=H14s", 1, mac)  # ARPHRD_ETHER
           + struct.pack("=i", ATF_COM | (ATF_PERM if permanent else 0))
           + bytes(16) + struct.pack("16s", ifname))
    _ioctl(SIOCSARP, req)


def _configure_inside(ifname: bytes, ip: str, net: Network, default_route: bool) -> None:
    """Address, up, default route, and the gateway's MAC (it is fixed: no ARP round trip
    before the first packet), for an interface of the current thread's namespace."""
    mask = str(ipaddress.IPv4Network(net.subnet).netmask)
    _ioctl(SIOCSIFADDR, struct.pack("16s16s8x", ifname, _sockaddr_in(ip)))
    _ioctl(SIOCSIFNETMASK, struct.pack("16s16s8x", ifname, _sockaddr_in(mask)))
    _set_up(ifname)
    if default_route:
        _ioctl(SIOCADDRT, _rtentry("0.0.0.0", net.gateway, "0.0.0.0", RTF_UP | RTF_GATEWAY))
    _set_arp(ifname, net.gateway, permanent=True)
