"""Archive commands of the CLI: save (docker save format) and load (docker save or OCI layout)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile

from ..errors import UsageError
from ..store import Store

_RAW = argparse.RawDescriptionHelpFormatter


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``save`` and ``load`` to the CLI parser."""
    save = sub.add_parser(
        "save", help="write images to a tar archive (docker save format)", formatter_class=_RAW,
        description="Write one or more images, with their layers and tags, to a tar archive "
        "that `docker load` and `pydock load` read (it is an OCI image layout too). A NAME "
        "without a tag saves every tag of that repository.",
        epilog="examples:\n  pydock save -o app.tar myapp:1.0\n"
        "  pydock save myapp:1.0 | docker load")
    save.add_argument("-o", "--output", metavar="FILE",
                      help="write to FILE instead of stdout (created when complete)")
    save.add_argument("images", metavar="IMAGE", nargs="+", help="image name, id or id prefix")
    save.set_defaults(func=cmd_save)
    load = sub.add_parser(
        "load", help="load images from a tar archive (docker save or OCI layout)",
        formatter_class=_RAW,
        description="Load the images of a `docker save` archive (any Docker version) or of an "
        "OCI image layout tar (plain, gzip, bzip2 or xz) and tag them as the archive names "
        "them. Image ids stay Docker's.",
        epilog="examples:\n  pydock load -i app.tar\n  docker save busybox | pydock load")
    load.add_argument("-i", "--input", metavar="FILE",
                      help="read FILE instead of stdin (- for stdin)")
    load.add_argument("-q", "--quiet", action="store_true",
                      help="accepted for docker compatibility (pydock shows no progress)")
    load.set_defaults(func=cmd_load)


def _store(args: argparse.Namespace) -> Store:
    return Store(getattr(args, "store", None))


def cmd_save(args: argparse.Namespace) -> int:
    from ..sources.archives import save_images
    store = _store(args)
    if args.output in (None, "-"):
        if sys.stdout.isatty():
            raise UsageError("cowardly refusing to save to a terminal. Use the -o flag or "
                             "redirect")
        sys.stdout.flush()
        save_images(store, args.images, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return 0
    target = os.path.abspath(args.output)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".pydock-save-", dir=os.path.dirname(target))
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
    try:
        with open(fd, "wb") as out:
            save_images(store, args.images, out)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from ..sources.archives import load_images
    store = _store(args)
    if args.input in (None, "-"):
        if args.input is None and sys.stdin.isatty():
            raise UsageError("requested load from stdin, but stdin is empty (use -i FILE)")
        loaded = load_images(store, sys.stdin.buffer, source="stdin")
    else:
        try:
            f = open(args.input, "rb")
        except OSError as exc:
            raise UsageError(f"cannot read {args.input}: {exc.strerror}") from None
        with f:
            loaded = load_images(store, f, source=args.input)
    for item in loaded:
        for ref, previous in item.replaced:
            print(f"The image {ref} already exists, renaming the old one with ID {previous} "
                  "to empty string")
        for ref in item.refs:
            print(f"Loaded image: {ref}")
        if not item.refs:
            print(f"Loaded image ID: {item.image.id}")
    return 0
