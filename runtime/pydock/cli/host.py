"""The ``host-image`` command: make or refresh the host base image (pydock:host)."""

from __future__ import annotations

import argparse

from ..sources.host import HOST_IMAGE, host_image
from ..store import Store


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``host-image`` to the CLI parser."""
    parser = sub.add_parser(
        "host-image", help="make the host base image (pydock:host) and print its id",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Make, or refresh after the host's Python changed, an image that is a "
        "read-only view of this host's system directories (/usr, /etc without its secrets, "
        "/bin, /lib, /sbin) and of the running Python interpreter; nothing is copied and no "
        "registry is needed. Containers of it write to their own layer, never to the host. "
        "/root, /home, /tmp, /var, /opt and every other top-level directory are empty or "
        "absent in it. `FROM pydock:host` and `pydock run pydock:host` make it on first use.",
        epilog="examples:\n  pydock host-image\n"
        "  pydock run --rm pydock:host python3 -c 'import sys; print(sys.version)'\n"
        "  printf 'FROM pydock:host\\nCOPY app.py /app/\\nCMD [\"python3\", \"/app/app.py\"]\\n'"
        " | pydock build -t app -f - .")
    parser.add_argument("--name", default=HOST_IMAGE, metavar="NAME[:TAG]",
                        help=f"tag the image NAME (default {HOST_IMAGE})")
    parser.add_argument("--venv", action="store_true",
                        help="also show the running virtual environment (its site-packages) "
                        "and put its bin first in PATH")
    parser.set_defaults(func=cmd_host_image)


def cmd_host_image(args: argparse.Namespace) -> int:
    image = host_image(Store(getattr(args, "store", None)), args.name, venv=args.venv)
    print(image.id)
    return 0
