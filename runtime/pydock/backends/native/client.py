"""The client side of a monitor: spawn it, send requests, receive replies and events."""

from __future__ import annotations

import os
import select
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path

from ...errors import ContainerError, StartError
from .launch import recv, send
from .spawn import spawn


class MonitorClient:
    """A connection to one monitor process (see monitor.py); thread-safe."""

    def __init__(self, store_root: Path, *, detach: bool = False) -> None:
        """A new monitor for ``store_root`` (or the one the plugin started ahead)."""
        self.process, self.sock = spawn(store_root, detach=detach)
        self.lock = threading.RLock()
        self.events: deque[dict[str, object]] = deque()

    def request(self, doc: dict[str, object], fds: list[int] | None = None
                ) -> dict[str, object]:
        """Send a request; the reply (with any fds it carries under key ``fds``)."""
        with self.lock:
            try:
                send(self.sock, doc, fds)
            except OSError as exc:
                raise ContainerError(f"the pydock monitor is gone ({exc}); see "
                                     "<store>/runtime/monitor.log") from None
            while True:
                msg = self._recv()
                if "event" in msg:
                    self.events.append(msg)
                    continue
                return msg

    def notify(self, doc: dict[str, object]) -> bool:
        """Send a request the monitor answers with nothing (no round trip); False when
        the monitor is gone."""
        with self.lock:
            try:
                send(self.sock, doc | {"noreply": True})
            except OSError:
                return False
        return True

    def _recv(self) -> dict[str, object]:
        msg, fds = recv(self.sock)
        if msg is not None and fds:
            msg["fds"] = fds
        if msg is None:
            raise ContainerError("the pydock monitor exited unexpectedly; see "
                                 "<store>/runtime/monitor.log")
        return msg

    def wait_event(self, match: dict[str, object], timeout: float | None = None
                   ) -> dict[str, object] | None:
        """The first event whose items include ``match``; None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            while True:
                for ev in self.events:
                    if all(ev.get(k) == v for k, v in match.items()):
                        self.events.remove(ev)
                        return ev
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self.sock.settimeout(left)
                try:
                    msg = self._recv()
                except TimeoutError:
                    return None
                finally:
                    self.sock.settimeout(None)
                self.events.append(msg)

    def start(self, cid: str, stdio: list[int] | None = None, *,
              winsize: bytes | None = None, netns: int | None = None,
              ports: list[int] | None = None,
              published: Mapping[str, object] | None = None) -> int | None:
        """Start a container; with ``winsize`` (a tty) returns the pty master fd.
        ``netns``: a network namespace fd the container joins (sent after the stdio fds);
        ``ports``: the sockets reserving its published host ports (sent last), which the
        monitor holds while it runs, ``published`` what they map (for state.json)."""
        doc: dict[str, object] = {"op": "start", "id": cid}
        if winsize is not None:
            doc |= {"tty": True, "winsize": winsize.hex()}
        fds = list(stdio or [])
        if netns is not None:
            doc["netns"] = True
            fds.append(netns)
        if ports:
            doc |= {"ports": len(ports), "published": dict(published or {})}
            fds += ports
        reply = self.request(doc, fds or None)
        if not reply.get("ok"):
            raise StartError(str(reply.get("error")),
                             exit_code=int(reply.get("exit_code") or 125))  # type: ignore
        got = reply.get("fds") or []
        return got[0] if got else None  # type: ignore[index]

    def close(self, *, wait: bool = True) -> None:
        """Close the connection; a session monitor then kills its containers and exits."""
        try:
            self.sock.close()
        except OSError:
            pass
        if wait and not _exited(self.process, timeout=30):
            self.process.kill()
            self.process.wait()


def _exited(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``process`` to exit (and reap it).

    Through a pidfd the wait ends the moment it exits; Popen.wait(timeout) polls with
    sleeps growing to 50 ms, which a session paid at its end."""
    try:
        fd = os.pidfd_open(process.pid)
    except OSError:  # reaped already, or no pidfd (Linux < 5.3)
        fd = -1
    if fd >= 0:
        try:
            select.select([fd], [], [], timeout)
        finally:
            os.close(fd)
    try:
        process.wait(timeout=0 if fd >= 0 else timeout)
    except subprocess.TimeoutExpired:
        return False
    return True
