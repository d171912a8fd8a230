"""Image commands of the CLI: import, images, tag, rmi, inspect (images), gc."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from typing import IO

from ..changes import apply_changes
from ..errors import UsageError
from ..inspect_image import inspect_image_doc
from ..models import Image, ImageConfig
from ..store import Store
from .format import each_ref, format_table, human_duration, human_size, parse_time

_RAW = argparse.RawDescriptionHelpFormatter
def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the image subcommands to the CLI parser."""
    _add_import(sub)
    _add_images(sub.add_parser(
        "images", help="list images",
        description="List the images in the store, newest first, one row per tag."))
    _add_tag(sub.add_parser(
        "tag", help="give an image another name",
        description="Create the tag TARGET that refers to the image SOURCE."))
    _add_rmi(sub.add_parser(
        "rmi", help="remove images",
        description="Remove images: by name removes that tag (and the image once no tag is "
        "left), by id removes the image and all its tags. Layers no other image uses go too."))
    _add_image_group(sub)
    gc = sub.add_parser(
        "gc", help="delete unused layers and stale temporary files",
        description="Delete layers no image refers to and leftovers of dead pydock processes. "
        "Images themselves are kept (remove them with rmi). Safe while pydock runs elsewhere.")
    gc.add_argument("--build-cache", action="store_true",
                    help="also drop the build cache (the next build runs every step)")
    gc.set_defaults(func=cmd_gc)


def _add_import(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "import", help="create an image from a rootfs tarball", formatter_class=_RAW,
        description="Create a one-layer image from a tarball of a root filesystem (plain, gzip, "
        "bzip2 or xz) and print its id.",
        epilog="examples:\n  pydock import rootfs.tar.gz myapp:1.0 --change 'CMD [\"/app\"]'\n"
        "  tar -C rootfs -c . | pydock import - myapp --change 'ENV DEBUG=1'")
    parser.add_argument("file", metavar="FILE|-", help="the tarball, or - to read stdin")
    parser.add_argument("ref", metavar="NAME[:TAG]", nargs="?", help="tag the new image")
    parser.add_argument(
        "-c", "--change", action="append", default=[], metavar="LINE",
        help="a Dockerfile instruction to apply to the image config (CMD, ENTRYPOINT, ENV, "
        "EXPOSE, HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR); repeatable")
    parser.add_argument("-m", "--message", default="", help="commit message for the history")
    parser.set_defaults(func=cmd_import)


def _add_images(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="only print image ids")
    parser.add_argument("--no-trunc", action="store_true", help="print full image ids")
    parser.set_defaults(func=cmd_images)


def _add_tag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="image name, id or id prefix")
    parser.add_argument("target", metavar="TARGET", help="new NAME[:TAG]")
    parser.set_defaults(func=cmd_tag)


def _add_rmi(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f", "--force", action="store_true",
        help="remove an image with several tags by id; untag an image a container uses")
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="image name, id or id prefix")
    parser.set_defaults(func=cmd_rmi)


def _add_inspect(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="image name, id or id prefix")
    parser.set_defaults(func=cmd_image_inspect)


def _add_image_group(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = sub.add_parser(
        "image", help="manage images (inspect, ls, rm)",
        description="Manage images: `image inspect` prints their configuration as JSON.")
    image_sub = group.add_subparsers(dest="image_command", metavar="COMMAND")
    image_sub.required = True
    _add_inspect(image_sub.add_parser(
        "inspect", help="print images' details as JSON",
        description="Print a JSON list with one object per image, shaped like "
        "`docker image inspect` (Id, RepoTags, Config, RootFS, ...)."))
    _add_images(image_sub.add_parser(
        "ls", help="list images", description="List the images in the store (as `images`)."))
    _add_rmi(image_sub.add_parser(
        "rm", help="remove images", description="Remove images (as `rmi`)."))


# -- commands --------------------------------------------------------------------------------


def _store(args: argparse.Namespace) -> Store:
    return Store(getattr(args, "store", None))


def cmd_import(args: argparse.Namespace) -> int:
    config = apply_changes(ImageConfig(), args.change)
    comment = args.message or f"Imported from {args.file}"
    store = _store(args)
    if args.file == "-":
        image = store.import_tar(sys.stdin.buffer, config=config, ref=args.ref, comment=comment)
    else:
        with _open(args.file) as f:
            image = store.import_tar(f, config=config, ref=args.ref, comment=comment)
    print(image.id)
    return 0


def _open(path: str) -> IO[bytes]:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def cmd_images(args: argparse.Namespace) -> int:
    images = _store(args).images()
    if args.quiet:
        for image_id in dict.fromkeys(i.id if args.no_trunc else i.short_id for i in images):
            print(image_id)
        return 0
    now = dt.datetime.now(dt.UTC)
    rows = [["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]]
    for image in images:
        image_id = image.id if args.no_trunc else image.short_id
        created = human_duration(now - parse_time(image.created)) if image.created else ""
        for repo, tag in _repo_tags(image):
            rows.append([repo, tag, image_id, created, human_size(image.size)])
    print(format_table(rows))
    return 0


def _repo_tags(image: Image) -> list[tuple[str, str]]:
    if not image.tags:
        return [("<none>", "<none>")]
    return [(name, tag) for name, _, tag in (t.rpartition(":") for t in image.tags)]


def cmd_tag(args: argparse.Namespace) -> int:
    store = _store(args)
    store.tag(store.image(args.source).id, args.target)
    return 0


def cmd_rmi(args: argparse.Namespace) -> int:
    store = _store(args)
    return each_ref(args.images, lambda ref: print(
        "\n".join(store.remove_image(ref, force=args.force))))


def cmd_image_inspect(args: argparse.Namespace) -> int:
    store = _store(args)
    docs: list[dict[str, object]] = []
    status = each_ref(args.images, lambda ref: docs.append(inspect_image_doc(store, ref)))
    print(json.dumps(docs, indent=4))
    return status


def cmd_gc(args: argparse.Namespace) -> int:
    store = _store(args)
    if os.geteuid() == 0:  # stale runtime state: containers and cgroups of dead monitors
        from ..backends.native.backend import NativeBackend
        backend = NativeBackend(store)
        for cid in backend.sweep():
            print(f"Settled container of a dead monitor: {cid[:12]}")
        bridge = backend.network_manager().remove_idle_default()
        if bridge is not None:
            print(f"Deleted idle default network bridge: {bridge}")
    report = store.gc(build_cache=args.build_cache)
    for layer in report.layers:
        print(f"Deleted layer: {layer}")
    for entry in report.tmp_entries:
        print(f"Deleted stale temporary: {entry}")
    print(f"Total reclaimed space: {human_size(report.bytes_freed)}")
    return 0


