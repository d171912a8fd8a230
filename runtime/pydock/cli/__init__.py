"""The ``pydock`` command: a docker-like CLI over pydock's Python API (it only calls the API)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import PydockError
from . import containers, files, images

PROG = "pydock"

DESCRIPTION = """\
A daemonless container engine for tests: images in a local store, containers that start in
milliseconds, no Docker daemon needed (root required for the built-in engine).
"""

EPILOG = """\
store: images and containers live under --store DIR, else $PYDOCK_STORE, else
$XDG_CACHE_HOME/pydock (~/.cache/pydock).

examples:
  pydock import rootfs.tar busybox --change 'CMD ["sh"]'
  pydock run --rm busybox echo hello
  pydock run -d --name web busybox httpd -f -p 8000
  pydock exec web ps
  pydock rm -f web
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--store", metavar="DIR", help="image and container store (default: see below)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    images.register(sub)
    containers.register(sub)
    files.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pydock`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except PydockError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return int(status or 0)
