"""Registry commands of the CLI: pull, push (docker-style progress lines)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import PydockError
from ..sources.reference import RegistryRef
from ..store import Store

if TYPE_CHECKING:  # the client (urllib, ssl) loads only when a command needs it
    from ..sources.registry import Progress

ENGINE_ERROR = 125
_RAW = argparse.RawDescriptionHelpFormatter
_INSECURE_HELP = ("allow plain http (and TLS without verification) for this registry "
                  "host[:port]; repeatable. Registries on loopback (localhost, 127.0.0.0/8, ::1) "
                  "are always allowed")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add pull and push to the CLI parser."""
    p = sub.add_parser(
        "pull", help="download an image from a registry", formatter_class=_RAW,
        description="Download an image from a registry (the OCI distribution API) into the "
        "store and tag it. Credentials come from the Docker config (~/.docker/config.json or "
        "$DOCKER_CONFIG, as `docker login` writes them).",
        epilog="examples:\n  pydock pull busybox                    # docker.io/library/busybox"
        ":latest\n  pydock pull 127.0.0.1:5000/app:1.0\n"
        "  pydock pull --platform linux/arm64 ghcr.io/org/app@sha256:<digest>")
    p.add_argument("ref", metavar="NAME[:TAG|@DIGEST]", help="the image to pull")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="the platform to pick from a multi-platform image (default: this host's)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image reference")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST",
                   help=_INSECURE_HELP)
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser(
        "push", help="upload an image to a registry", formatter_class=_RAW,
        description="Upload an image (its layers, config and a Docker schema2 manifest) to a "
        "registry. Without REF the image's own name says where: 127.0.0.1:5000/app:1.0 goes to "
        "the registry 127.0.0.1:5000.",
        epilog="examples:\n  pydock tag app:1.0 127.0.0.1:5000/app:1.0 && pydock push "
        "127.0.0.1:5000/app:1.0\n  pydock push app:1.0 registry.example.com/team/app:1.0")
    p.add_argument("image", metavar="IMAGE", help="the local image (name, id or id prefix)")
    p.add_argument("ref", metavar="REF", nargs="?",
                   help="[REGISTRY/]NAME[:TAG] to push to (default: IMAGE's name)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the pushed reference")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST",
                   help=_INSECURE_HELP)
    p.set_defaults(func=cmd_push)


def _printer(quiet: bool) -> Callable[[Progress], None] | None:
    if quiet:
        return None
    return lambda event: print(event, flush=True)


def cmd_pull(args: argparse.Namespace) -> int:
    from ..sources.registry import pull

    try:
        ref = RegistryRef.parse(args.ref)
        pull(Store(args.store), args.ref, platform=args.platform,
             insecure=ref.domain in args.insecure_registry, progress=_printer(args.quiet))
    except PydockError as exc:
        exc.exit_code = ENGINE_ERROR
        raise
    print(ref)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from ..sources.registry import push

    try:
        dest = RegistryRef.parse(args.ref or args.image)
        push(Store(args.store), args.image, args.ref,
             insecure=dest.domain in args.insecure_registry, progress=_printer(args.quiet))
    except PydockError as exc:
        exc.exit_code = ENGINE_ERROR
        raise
    if args.quiet:
        print(dest)
    return 0
