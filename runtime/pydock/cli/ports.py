"""Port and network-fault commands of the CLI: ``port`` and ``net-fault`` (either backend)."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import UsageError
from ..ports import format_port


def _container(args: argparse.Namespace) -> Any:
    """The container ``args.container`` of the backend the command runs with."""
    if getattr(args, "docker", False):
        from .docker_commands import backend as docker_backend
        return docker_backend(args).container(args.container)
    from .containers import backend
    return backend(args).container(args.container)


def cmd_port(args: argparse.Namespace) -> int:
    c = _container(args)
    for line in format_port(c.ports(), name=args.container, private=args.port):
        print(line)
    return 0


def describe(faults: Any, interface: str) -> str:
    """``delay 100ms jitter 10ms loss 5% rate 1mbit on eth0`` (or ``no faults on eth0``)."""
    parts = []
    if faults.delay:
        parts.append(f"delay {faults.delay * 1000:g}ms")
    if faults.jitter:
        parts.append(f"jitter {faults.jitter * 1000:g}ms")
    if faults.loss:
        parts.append(f"loss {faults.loss:g}%")
    if faults.rate:
        unit, size = next((u, n) for u, n in (("gbit", 10**9), ("mbit", 10**6),
                                              ("kbit", 10**3), ("bit", 1))
                          if faults.rate % n == 0)
        parts.append(f"rate {faults.rate // size}{unit}")
    return f"{' '.join(parts) or 'no faults'} on {interface}"


def cmd_net_fault(args: argparse.Namespace) -> int:
    given = {k: getattr(args, k) for k in ("delay", "jitter", "loss", "rate")
             if getattr(args, k) is not None}
    if args.clear and given:
        raise UsageError("--clear takes no other fault option")
    if not args.clear and not given:
        raise UsageError("give --delay, --jitter, --loss or --rate (or --clear)")
    c = _container(args)
    if args.clear:
        c.clear_faults(interface=args.interface)
        print(f"{args.container}: faults cleared on {args.interface}")
        return 0
    faults = c.set_faults(interface=args.interface, **given)
    print(f"{args.container}: {describe(faults, args.interface)}")
    return 0


def _docker(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        args.docker = True
        return int(func(args))
    return run


# the --backend docker implementations (cli/docker_commands.py routes to them)
DOCKER_COMMANDS = {"port": _docker(cmd_port), "net-fault": _docker(cmd_net_fault)}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``port`` and ``net-fault`` to the CLI parser."""
    p = sub.add_parser("port", help="list a container's published ports",
                       description="List the published ports of a running container, or "
                                   "where one of its ports is published.")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("port", nargs="?", metavar="PORT[/PROTO]", help="e.g. 80 or 53/udp")
    p.set_defaults(func=cmd_port)

    p = sub.add_parser(
        "net-fault", help="delay, lose or slow down a running container's traffic",
        description="Set network faults on the traffic leaving a running container's "
                    "interface (replacing earlier ones), or clear them. With tc netem in "
                    "the kernel one netem qdisc does it all; without it loss is an nft "
                    "drop of arriving packets, rate a tbf qdisc and the delay is held by a "
                    "small pydock-delay process that ends with the container.")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("--delay", metavar="TIME", help="added to each packet, e.g. 100ms")
    p.add_argument("--jitter", metavar="TIME", help="random +- spread of the delay, e.g. 10ms")
    p.add_argument("--loss", metavar="PERCENT", help="share of packets dropped, e.g. 5%%")
    p.add_argument("--rate", metavar="RATE", help="bandwidth, e.g. 1mbit, 512kbit, 10mbps")
    p.add_argument("--clear", action="store_true", help="remove the container's faults")
    p.add_argument("--interface", default="eth0", metavar="IFACE",
                   help="the container's interface (default eth0: its first network)")
    p.set_defaults(func=cmd_net_fault)
