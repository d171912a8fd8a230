"""Helpers of the network tests: `ip`, the host objects a test made, UDP probes."""

from __future__ import annotations

import json
import socket
import subprocess
import time


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def host_objects(prefix: str, **more: list[str]) -> dict[str, list[str]]:
    """The links and named netns whose names start with ``prefix``, with ``more`` kinds the
    caller found; only the kinds that have any."""
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, check=True,
                                      text=True).stdout)
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {k: v for k, v in {
        "links": [lk["ifname"] for lk in links if lk["ifname"].startswith(prefix)],
        "netns": [n.split()[0] for n in netns.splitlines() if n.startswith(prefix)],
        **more,
    }.items() if v}


def udp_ask(host: str, port: int, payload: bytes = b"hi") -> bytes:
    """One UDP question's answer; a lost datagram is sent again (5 tries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for attempt in range(5):
            s.sendto(payload, (host, port))
            try:
                return s.recv(2048)
            except TimeoutError:
                if attempt == 4:
                    raise
    raise AssertionError("unreachable")


def rtt(addr: tuple[str, int], count: int = 7) -> list[float]:
    """UDP echo round trips (seconds) to ``addr``; a lost probe is retried."""
    times = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        for i in range(count):
            for attempt in range(5):
                payload = f"{i}.{attempt}".encode()
                start = time.perf_counter()
                s.sendto(payload, addr)
                try:
                    while s.recv(100) != payload:
                        pass
                except TimeoutError:
                    continue
                times.append(time.perf_counter() - start)
                break
            else:
                raise AssertionError("5 probes in a row were lost")
    return times
