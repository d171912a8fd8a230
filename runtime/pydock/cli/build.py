"""``pydock build``: a Dockerfile and its context into an image, with Docker's classic output."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BuildError, UsageError

if TYPE_CHECKING:
    from ..builder import BuildReporter

_DESCRIPTION = """\
Build an image from a Dockerfile and a context directory, like `docker build`. RUN steps run
in native containers (with the host's network, as `docker build --network host`). Every step
is cached: a rebuild with nothing changed reuses each step, changing one copied file rebuilds
from that step on, --no-cache rebuilds everything.
"""

_EPILOG = """\
examples:
  pydock build -t app:1.0 .
  pydock build -f docker/Dockerfile --build-arg VERSION=2 --target runtime -t app .
  pydock build -t app - < Dockerfile-with-no-context      # (context: the current dir)
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``build`` to the CLI parser."""
    parser = sub.add_parser("build", help="build an image from a Dockerfile",
                            description=_DESCRIPTION, epilog=_EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("context", metavar="CONTEXT",
                        help="the build context directory (`-`: read the Dockerfile from "
                        "stdin, no context)")
    parser.add_argument("-t", "--tag", action="append", default=[], metavar="NAME[:TAG]",
                        help="name the image (repeatable)")
    parser.add_argument("-f", "--file", metavar="PATH",
                        help="the Dockerfile (default: CONTEXT/Dockerfile; `-` reads stdin)")
    parser.add_argument("--build-arg", action="append", default=[], metavar="KEY[=VALUE]",
                        help="set a build-time variable (KEY alone takes it from the "
                        "environment)")
    parser.add_argument("--target", metavar="STAGE", help="build this stage (and what it "
                        "needs) only")
    parser.add_argument("--no-cache", action="store_true", help="run every step again")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="add a label to the image")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print only the image id (the output of a failing step too)")
    parser.add_argument("--iidfile", metavar="FILE", help="write the image id to FILE")
    parser.set_defaults(func=cmd_build)


def console_reporter() -> BuildReporter:
    """Docker's classic build output on stdout (the builder is imported only when used)."""
    from ..builder import BuildReporter

    class ConsoleReporter(BuildReporter):
        """Docker's classic build output on stdout."""

        def __init__(self) -> None:
            self.out = sys.stdout

        def step(self, number: int, total: int, text: str) -> None:
            first, _, rest = text.strip().partition("\n")
            self.out.write(f"Step {number}/{total} : {first}{' ...' if rest else ''}\n")
            self.out.flush()

        def note(self, text: str) -> None:
            self.out.write(f"{text}\n")
            self.out.flush()

        def output(self, data: bytes) -> None:
            self.out.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()

    return ConsoleReporter()


def _pairs(values: list[str], what: str, *, from_env: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not key:
            raise UsageError(f"invalid {what} {value!r}: expected KEY=VALUE")
        if not sep:
            if not from_env:
                raise UsageError(f"invalid {what} {value!r}: expected KEY=VALUE")
            import os
            if key not in os.environ:
                continue
            val = os.environ[key]
        out[key] = val
    return out


def cmd_build(args: argparse.Namespace) -> int:
    text = None
    context = args.context
    if context == "-":
        text, context = sys.stdin.read(), "."
    elif args.file == "-":
        text = sys.stdin.read()
    if not Path(context).is_dir():
        raise UsageError(f"unable to prepare context: path {context!r} not found")
    from ..builder import BuildOptions
    opts = BuildOptions(
        context=context, dockerfile=None if args.file in (None, "-") else args.file,
        dockerfile_text=text, tags=tuple(args.tag),
        build_args=_pairs(args.build_arg, "--build-arg", from_env=True), target=args.target,
        no_cache=args.no_cache, labels=_pairs(args.label, "--label", from_env=False))
    from ..builder import build
    from ..sources import resolve_base
    from ..store import Store
    store = Store(getattr(args, "store", None))
    try:
        result = build(store, opts, reporter=None if args.quiet else console_reporter(),
                       resolve_base=resolve_base)
    except BuildError as exc:
        if args.quiet and exc.output:
            sys.stderr.write(exc.output.rstrip("\n") + "\n")
        raise
    for warning in result.warnings:
        sys.stderr.write(f"[Warning] {warning}\n")
    image = result.image
    if args.iidfile:
        Path(args.iidfile).write_text(image.id)
    if args.quiet:
        print(image.id)
        return 0
    print(f"Successfully built {image.short_id}")
    for tag in opts.tags:
        print(f"Successfully tagged {tag if ':' in tag.rpartition('/')[2] else tag + ':latest'}")
    return 0
