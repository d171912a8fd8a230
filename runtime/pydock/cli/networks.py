"""Network commands of the CLI: network create, ls, rm, inspect, connect, disconnect."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..backends.native.backend import NativeBackend
from ..backends.native.network import members
from ..backends.native.network_ipam import Network, mac_of
from ..errors import UsageError
from .format import each_ref, format_table


def backend(args: argparse.Namespace) -> NativeBackend:
    return NativeBackend(args.store, network_pool=0)


def cmd_create(args: argparse.Namespace) -> int:
    if args.driver != "bridge":
        raise UsageError(f"network driver {args.driver!r} is not supported: only bridge")
    labels = dict(item.partition("=")[::2] for item in args.label)
    net = backend(args).create_network(args.name, subnet=args.subnet, gateway=args.gateway,
                                       labels=labels)
    print(net.id)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    nets = backend(args).networks()
    if args.quiet:
        for net in nets:
            print(net.id if args.no_trunc else net.id[:12])
        return 0
    rows = [[net.id if args.no_trunc else net.id[:12], net.name, net.driver, "local"]
            for net in nets]
    print(format_table([["NETWORK ID", "NAME", "DRIVER", "SCOPE"], *rows]))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    b = backend(args)
    return each_ref(args.networks, lambda ref: (b.remove_network(ref), print(ref)))


def network_doc(net: Network) -> dict[str, Any]:
    """``docker network inspect``-shaped JSON."""
    containers = {
        lease.cid: {"Name": lease.name, "EndpointID": lease.ifname,
                    "MacAddress": mac_of(lease.ip),
                    "IPv4Address": f"{lease.ip}/{net.prefixlen}", "IPv6Address": ""}
        for lease in (members(net.id) if net.bridge else [])}
    return {
        "Name": net.name,
        "Id": net.id,
        "Created": net.created or "0001-01-01T00:00:00Z",
        "Scope": "local",
        "Driver": net.driver,
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": {},
                 "Config": [{"Subnet": net.subnet, "Gateway": net.gateway}] if net.subnet
                 else []},
        "Internal": False,
        "Attachable": False,
        "Containers": containers,
        "Options": {"com.docker.network.bridge.name": net.bridge} if net.bridge else {},
        "Labels": dict(net.labels),
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    b = backend(args)
    docs: list[dict[str, Any]] = []
    status = each_ref(args.networks, lambda ref: docs.append(network_doc(b.network(ref))))
    print(json.dumps(docs, indent=4))
    return status


def cmd_connect(args: argparse.Namespace) -> int:
    b = backend(args)
    b.container(args.container).connect(args.network, aliases=args.alias)
    return 0


def cmd_disconnect(args: argparse.Namespace) -> int:
    b = backend(args)
    b.container(args.container).disconnect(args.network)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``network`` and its subcommands to the CLI parser."""
    group = sub.add_parser(
        "network", help="manage networks",
        description="Manage networks. Containers on one user network reach each other by "
                    "name and --network-alias (their /etc/hosts lists each other); different "
                    "networks cannot reach each other; the host reaches every container by "
                    "its IP. Subnets come from $PYDOCK_SUBNET (default 10.213.0.0/16).")
    nsub = group.add_subparsers(dest="network_command", metavar="COMMAND")
    nsub.required = True

    p = nsub.add_parser("create", help="create a network (prints its id)",
                        description="Create a user network with its own bridge.")
    p.add_argument("--subnet", metavar="CIDR",
                   help="its IPv4 subnet (default: a free /24 of $PYDOCK_SUBNET)")
    p.add_argument("--gateway", metavar="IP", help="the bridge's address (the subnet's first)")
    p.add_argument("-d", "--driver", default="bridge", help="only bridge")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_create)

    p = nsub.add_parser("ls", aliases=["list"], help="list networks",
                        description="List networks: bridge, host, none and this store's.")
    p.add_argument("-q", "--quiet", action="store_true", help="only ids")
    p.add_argument("--no-trunc", action="store_true", help="full ids")
    p.set_defaults(func=cmd_ls)

    p = nsub.add_parser("rm", aliases=["remove"], help="remove networks",
                        description="Remove user networks and their bridges (refused while "
                                    "containers run on them).")
    p.add_argument("networks", nargs="+", metavar="NETWORK")
    p.set_defaults(func=cmd_rm)

    p = nsub.add_parser("inspect", help="JSON details of networks",
                        description="Print docker-network-inspect-shaped JSON.")
    p.add_argument("networks", nargs="+", metavar="NETWORK")
    p.set_defaults(func=cmd_inspect)

    p = nsub.add_parser("connect", help="connect a container to a network",
                        description="Connect a container to a network: at once if it runs, "
                                    "else from its next start.")
    p.add_argument("--alias", action="append", default=[], metavar="ALIAS",
                   help="another name of the container on that network")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_connect)

    p = nsub.add_parser("disconnect", help="disconnect a container from a network",
                        description="Disconnect a container from a network.")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_disconnect)
