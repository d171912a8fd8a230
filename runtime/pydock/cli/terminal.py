"""Terminal plumbing for the CLI: proxy our terminal to a container's pty; follow log files."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import sys
import termios
import tty
from collections.abc import Callable
from pathlib import Path


def winsize() -> bytes | None:
    """Our terminal's size as a struct winsize (None when stdin is no terminal)."""
    if not os.isatty(0):
        return None
    return fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)


class Terminal:
    """Puts our terminal in raw mode and copies bytes to and from a container's pty master."""

    def __init__(self, master: int) -> None:
        self.master = master
        self._saved: list[object] | None = None

    def _resize(self, *_: object) -> None:
        size = winsize()
        if size:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)

    def __enter__(self) -> Terminal:
        if os.isatty(0):
            self._saved = termios.tcgetattr(0)
            tty.setraw(0)
        signal.signal(signal.SIGWINCH, self._resize)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, self._saved)  # type: ignore[arg-type]
        signal.signal(signal.SIGWINCH, signal.SIG_DFL)
        os.close(self.master)

    def copy(self, *, log: Path | None, done: Callable[[], bool], stdin: bool = True) -> None:
        """Copy pty -> stdout (and ``log``), and stdin -> pty when ``stdin`` (docker's -i),
        until the pty closes."""
        logf = open(log, "ab") if log else None
        readers = [self.master, 0] if stdin else [self.master]
        try:
            while True:
                try:
                    ready, _, _ = select.select(readers, [], [], 0.5)
                except InterruptedError:
                    continue
                if not ready and done():
                    break
                if 0 in ready:
                    data = os.read(0, 4096)
                    if data:
                        os.write(self.master, data)
                    else:
                        readers.remove(0)
                if self.master in ready:
                    try:
                        data = os.read(self.master, 65536)
                    except OSError as exc:
                        if exc.errno == errno.EIO:
                            break
                        raise
                    if not data:
                        break
                    os.write(1, data)
                    if logf:
                        logf.write(data)
        finally:
            if logf:
                logf.close()


class LogFollower:
    """Copies what was appended to a container's stdout/stderr logs since the last call."""

    def __init__(self, stdout: Path, stderr: Path, *, tail: int | None = None) -> None:
        self.files = [(stdout, sys.stdout.buffer), (stderr, sys.stderr.buffer)]
        self.offsets = [0, 0]
        if tail is not None:
            self.offsets = [self._tail_offset(p, tail) for p, _ in self.files]

    @staticmethod
    def _tail_offset(path: Path, lines: int) -> int:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return 0
        if lines <= 0:
            return len(data)
        pos = len(data)
        for _ in range(lines + (1 if data.endswith(b"\n") else 0)):
            pos = data.rfind(b"\n", 0, pos)
            if pos < 0:
                return 0
        return pos + 1

    def pump(self) -> None:
        for i, (path, out) in enumerate(self.files):
            try:
                with open(path, "rb") as f:
                    f.seek(self.offsets[i])
                    data = f.read()
            except FileNotFoundError:
                continue
            if data:
                self.offsets[i] += len(data)
                out.write(data)
                out.flush()
