"""Forwarding rules for the project's bridges: isolation in nftables, a pass through Docker's
iptables FORWARD policy.

- Table ``inet pydock_filter`` (ours; made on first use, removed when no bridge needs it):
  a forward chain that accepts traffic staying on one of our bridges (set ``same`` of
  ``bridge . bridge`` pairs) and drops any other forwarding from or to them (set
  ``bridges``): user networks cannot reach each other, and containers cannot reach past
  the host (no route to the outside; published ports arrive DNAT'ed and are let in).
- Docker sets the iptables FORWARD policy to DROP and, with ``br_netfilter``
  (``net.bridge.bridge-nf-call-iptables=1``), even traffic between two ports of one bridge
  crosses that chain.  An accept in our own table cannot override a drop in Docker's, so
  each bridge gets ``-I FORWARD -i BR -o BR -j ACCEPT`` (comment ``pydock``) where an
  iptables FORWARD chain exists, removed with the bridge.
"""

from __future__ import annotations

import shutil
import subprocess

from ...errors import NetworkError

TABLE = "pydock_filter"
COMMENT = "pydock"

_SETUP = f"""
add table inet {TABLE}
add set inet {TABLE} bridges {{ type ifname; }}
add set inet {TABLE} same {{ type ifname . ifname; }}
add chain inet {TABLE} forward {{ type filter hook forward priority filter - 5; policy accept; }}
"""

_RULES = f"""
add rule inet {TABLE} forward iifname . oifname @same accept
add rule inet {TABLE} forward iifname @bridges drop
add rule inet {TABLE} forward oifname @bridges ct status dnat accept
add rule inet {TABLE} forward oifname @bridges drop
"""


def _nft():  # type: ignore[no-untyped-def]
    from .nftables import Nft
    return Nft()


def _table_exists(nft) -> bool:  # type: ignore[no-untyped-def]
    from .nftables import NftError
    try:
        nft.run(f"list table inet {TABLE}")
        return True
    except NftError:
        return False


def install(bridge: str) -> None:
    """Let traffic flow within ``bridge`` and nowhere else (idempotent)."""
    with _nft() as nft:
        if not _table_exists(nft):
            nft.run(_SETUP + _RULES)
        nft.run(f'add element inet {TABLE} bridges {{ "{bridge}" }}\n'
                f'add element inet {TABLE} same {{ "{bridge}" . "{bridge}" }}')
    _iptables_accept(bridge, add=True)


def uninstall(bridge: str) -> None:
    """Remove the bridge's rules; the table goes with the last bridge (idempotent)."""
    from .nftables import NftError
    _iptables_accept(bridge, add=False)
    with _nft() as nft:
        if not _table_exists(nft):
            return
        for cmd in (f'delete element inet {TABLE} bridges {{ "{bridge}" }}',
                    f'delete element inet {TABLE} same {{ "{bridge}" . "{bridge}" }}'):
            try:
                nft.run(cmd)
            except NftError:
                pass  # not there
        if not bridges(nft):
            nft.run(f"delete table inet {TABLE}")


def bridges(nft=None) -> list[str]:  # type: ignore[no-untyped-def]
    """The bridges our nft table lets through."""
    own = nft is None
    nft = nft or _nft()
    try:
        if not _table_exists(nft):
            return []
        for item in nft.json(f"list set inet {TABLE} bridges"):
            if "set" in item:
                return [str(e) for e in item["set"].get("elem", [])]
        return []
    finally:
        if own:
            nft.close()


def _iptables_accept(bridge: str, *, add: bool) -> None:
    """``iptables -I/-D FORWARD -i BR -o BR -j ACCEPT`` where iptables and its FORWARD
    chain exist (exit codes only: no output is parsed)."""
    exe = shutil.which("iptables")
    if exe is None:
        return
    rule = ["FORWARD", "-i", bridge, "-o", bridge, "-m", "comment", "--comment", COMMENT,
            "-j", "ACCEPT"]

    def run(*args: str) -> int:
        return subprocess.run([exe, "-w", "10", *args], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode

    if add:
        if run("-n", "-L", "FORWARD") != 0:
            return  # no filter table / FORWARD chain: nothing filters forwarding there
        if run("-C", *rule) == 0:
            return
        if run("-I", *rule) != 0:
            raise NetworkError(f"cannot add the iptables FORWARD accept rule for bridge "
                               f"{bridge} (`iptables -I {' '.join(rule)}` failed)")
    else:
        while run("-C", *rule) == 0:
            if run("-D", *rule) != 0:
                raise NetworkError(f"cannot remove the iptables FORWARD rule of bridge "
                                   f"{bridge}")
