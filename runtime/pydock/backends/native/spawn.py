"""Starting a monitor process, with the standard library alone.

A session's first container waits for its monitor to start (~0.1 s of imports), and the
pytest plugin can start it before it imports the engine itself (``prestart``): the two
load side by side.  The monitor started ahead is taken over by the first MonitorClient
of the same store (``spawn`` hands it out); one nobody took is closed (``discard``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

# -S: no site-packages (the monitor needs the standard library and pydock, which it finds
# on PYTHONPATH) and a smaller process; -c, not -m: no runpy; -P: nothing from the
# working directory shadows pydock.
_BOOT = "import sys; from pydock.backends.native.monitor import main; main(sys.argv[1:])"

_early: dict[Path, tuple[subprocess.Popen[bytes], socket.socket]] = {}


def prestart(store_root: Path) -> None:
    """Start a session monitor for ``store_root`` now, for a MonitorClient to take later."""
    store_root = Path(os.path.abspath(store_root))
    if store_root not in _early:
        _early[store_root] = _start(store_root, detach=False)


def spawn(store_root: Path, *, detach: bool = False
          ) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """A monitor for ``store_root`` (the one started ahead, if any) and our end of its
    socket."""
    early = None if detach else _early.pop(Path(os.path.abspath(store_root)), None)
    return early or _start(store_root, detach=detach)


def discard() -> None:
    """Close the monitors started ahead that nobody took (each exits at once)."""
    while _early:
        _, (process, sock) = _early.popitem()
        sock.close()
        process.wait()


def _start(store_root: Path, *, detach: bool) -> tuple[subprocess.Popen[bytes], socket.socket]:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    cmd = [sys.executable, "-S", "-P", "-c", _BOOT, "--fd", str(child.fileno()),
           "--store", str(store_root)]
    if detach:
        cmd.append("--detach")
    log_dir = store_root / "runtime"
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open(log_dir / "monitor.log", "ab") as log:
            process = subprocess.Popen(
                cmd, pass_fds=[child.fileno()], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
                env=monitor_env(store_root))
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()
    return process, parent


def monitor_env(store_root: Path) -> dict[str, str]:
    """The monitor imports pydock from wherever this process found it.

    Where bytecode may not be written beside the sources (PYTHONDONTWRITEBYTECODE, common
    in CI and images), the monitor keeps its own under the store instead: it starts in
    every session, and compiling its modules each time cost ~60 ms here."""
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg_root, env.get("PYTHONPATH")]))
    if env.get("PYTHONDONTWRITEBYTECODE") and "PYTHONPYCACHEPREFIX" not in env:
        del env["PYTHONDONTWRITEBYTECODE"]
        env["PYTHONPYCACHEPREFIX"] = str(store_root / "runtime" / "pycache")
    return env
