"""The ``pydock`` command: a docker-like CLI over pydock's Python API (it only calls the API)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..errors import PydockError, UsageError
from . import archives, build, containers, files, host, images, networks, ports, registry

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
    parser.add_argument(
        "--backend", choices=["native", "docker"], default=None,
        help="container engine of the container commands (default: $PYDOCK_BACKEND or "
             "native); docker: the daemon of DOCKER_HOST or the current docker context")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    sub.required = True
    images.register(sub)
    containers.register(sub)
    files.register(sub)
    registry.register(sub)
    archives.register(sub)
    build.register(sub)
    host.register(sub)
    networks.register(sub)
    ports.register(sub)
    return parser


# Commands whose options may come after their positional arguments, as docker allows
# (``pydock commit CTR -c 'CMD ["x"]' img:1``); not run/exec, whose trailing words are the
# container's command.
INTERMIXED = ("commit", "import", "tag", "cp", "export", "diff", "rm", "stop", "kill",
              "wait", "logs", "inspect", "rmi", "start", "pull", "push")


def parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    args, extra = parser.parse_known_args(argv)
    if not extra:
        return args
    sub = _subparsers(parser).get(args.subcommand)
    if sub is None:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.subcommand not in INTERMIXED:
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    rest = list(argv)[list(argv).index(args.subcommand) + 1:]
    return argparse.Namespace(**(vars(args) | vars(sub.parse_intermixed_args(rest))))


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pydock`` console script; returns the exit status."""
    parser = build_parser()
    args = parse(parser, sys.argv[1:] if argv is None else argv)
    try:
        engine = args.backend or os.environ.get("PYDOCK_BACKEND") or "native"
        if engine not in ("native", "docker"):
            raise UsageError(f"PYDOCK_BACKEND={engine!r}: use native or docker")
        if engine == "docker":
            from .docker_commands import route
            args.func = route(args)
        status = args.func(args)
    except PydockError as exc:
        # surrogateescape: a non-UTF-8 argument is shown as the bytes it was, as docker does
        sys.stderr.flush()
        sys.stderr.buffer.write(f"{PROG}: error: {exc}\n".encode(errors="surrogateescape"))
        sys.stderr.flush()
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return int(status or 0)
