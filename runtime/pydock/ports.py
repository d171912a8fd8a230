"""Published ports as users write them: Docker's ``-p``/``-P`` rules and ``port`` lines (pure).

::

    parse_publish("127.0.0.1:8080:80/udp")  -> (PortSpec(80, "udp", "127.0.0.1", 8080),)
    parse_publish("8000-8001:80-81")        -> two PortSpecs, 8000->80 and 8001->81
    parse_publish("8000-8010:80")           -> one PortSpec choosing a host port in 8000-8010
    publish_all({"80/tcp": {}})             -> the -P specs for an image's ExposedPorts
    resolve_ports(["8080:80", 53], ...)     -> the PortSpecs of RunOptions.ports (+ -P)

Host address defaults: with a host port (``-p 8080:80``) ``0.0.0.0``, every address of
the host, as Docker has it; without one (``-p 80``, ``-P``) a free port on ``127.0.0.1``
(a test's service is for this machine only; ``-p 0.0.0.0::80`` asks for all addresses).
pydock publishes IPv4 tcp and udp ports.  Bad input raises ``UsageError`` with Docker's
wording (``invalid containerPort: x``, ``invalid proto: x``...).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from .errors import NetworkError, UsageError
from .models import PortSpec

PROTOS = ("tcp", "udp")
ANY_IP = "0.0.0.0"
LOOPBACK = "127.0.0.1"

PortsDoc = dict[str, list[tuple[str, int]]]   # {"80/tcp": [("127.0.0.1", 49153)]}


def _port_range(text: str) -> tuple[int, int]:
    """``"80"`` or ``"8000-8010"`` -> (start, end); ValueError when not ports."""
    start_s, sep, end_s = text.partition("-")
    if not start_s.isdigit() or (sep and not end_s.isdigit()):
        raise ValueError(text)
    start, end = int(start_s), int(end_s) if sep else int(start_s)
    if start > 65535 or end > 65535 or end < start:
        raise ValueError(text)
    return start, end


def _ipv4(ip: str, context: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise UsageError(f"invalid IP address: {ip} ({context})") from None
    if addr.version == 6:
        raise UsageError(f"IPv6 host address {ip} in {context}: pydock publishes on IPv4 only")
    return str(addr)


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
        ip = _ipv4(ip, f"in -p {text}")
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
    host_ip = ip or (ANY_IP if hstart else LOOPBACK)
    if cstart == cend and hend != hstart:           # one port, a host range to choose in
        return (PortSpec(cstart, proto, host_ip, hstart or None, hend if hstart else None),)
    return tuple(
        PortSpec(cstart + i, proto, host_ip, (hstart + i) if hstart else None)
        for i in range(cend - cstart + 1)
    )


def publish_all(exposed: Iterable[str] | Mapping[str, object], *,
                host_ip: str = LOOPBACK) -> tuple[PortSpec, ...]:
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
        specs.extend(PortSpec(n, proto, host_ip) for n in range(start, end + 1) if n)
    return tuple(sorted(set(specs), key=lambda s: (s.container_port, s.proto)))


def check_spec(spec: PortSpec) -> PortSpec:
    """A PortSpec given through the API, validated (UsageError naming it)."""
    what = f"published port {spec.key}"
    if spec.proto not in PROTOS:
        raise UsageError(f"invalid proto: {spec.proto} ({what}: tcp or udp)")
    if not 0 < spec.container_port < 65536:
        raise UsageError(f"invalid containerPort: {spec.container_port} ({what})")
    for port in (spec.host_port, spec.host_port_end):
        if port is not None and not 0 < port < 65536:
            raise UsageError(f"invalid hostPort: {port} ({what})")
    if spec.host_port_end is not None and (spec.host_port is None
                                           or spec.host_port_end < spec.host_port):
        raise UsageError(f"invalid host port range {spec.host_port}-{spec.host_port_end} "
                         f"({what})")
    _ipv4(spec.host_ip, what)
    return spec


def resolve_ports(items: Sequence[str | int | PortSpec], *, publish_all_exposed: bool = False,
                  exposed: Iterable[str] = ()) -> tuple[PortSpec, ...]:
    """RunOptions.ports (``-p`` text, a container port number, or PortSpecs) and ``-P``
    (every exposed port without a ``-p`` of its own) -> the PortSpecs to publish."""
    specs: list[PortSpec] = []
    for item in items:
        if isinstance(item, PortSpec):
            specs.append(check_spec(item))
        elif isinstance(item, bool) or not isinstance(item, (int, str)):
            raise UsageError(f"invalid published port {item!r}: use a port number, "
                             "'[IP:][HOSTPORT:]PORT[/udp]' or a PortSpec")
        elif isinstance(item, int):
            specs.append(check_spec(PortSpec(item)))
        else:
            specs.extend(parse_publish(item))
    if publish_all_exposed:
        given = {s.key for s in specs}
        specs += [s for s in publish_all(exposed) if s.key not in given]
    return tuple(dict.fromkeys(specs))           # exact repeats once, order kept


def format_port(ports: Mapping[str, Sequence[tuple[str, int]]], *, name: str,
                private: str | None = None) -> list[str]:
    """The lines ``docker port NAME [PRIVATE_PORT[/PROTO]]`` prints for ``ports``
    (``{"80/tcp": [("127.0.0.1", 49153)]}``).

    Without ``private``: ``80/tcp -> 127.0.0.1:49153`` for each mapping, sorted by port
    and protocol; with it: ``127.0.0.1:49153`` for the matching ones, or a
    ``NetworkError`` with Docker's ``No public port '80/tcp' published for NAME``.
    """
    rows: list[tuple[int, str, str]] = []
    for key, bindings in ports.items():
        port, _, proto = key.partition("/")
        rows += [(int(port), proto or "tcp", f"{hip}:{hport}") for hip, hport in bindings]
    rows.sort()
    if private is None:
        return [f"{port}/{proto} -> {addr}" for port, proto, addr in rows]
    port_s, _, proto = private.partition("/")
    proto = (proto or "tcp").lower()
    if not port_s.isdigit():
        raise UsageError(f"invalid port: {private!r} (expected PORT or PORT/PROTO)")
    found = [addr for port, p, addr in rows if port == int(port_s) and p == proto]
    if not found:
        raise NetworkError(f"No public port '{private}' published for {name}")
    return found
