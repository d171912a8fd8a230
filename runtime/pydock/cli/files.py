"""File commands of the CLI: cp, export, diff, commit.  Each only calls the Python API
(NativeBackend and the native backend's rootfs module)."""

from __future__ import annotations

import argparse
import os
import stat
import sys
import tarfile
import tempfile

from ..backends.native import rootfs
from ..backends.native.backend import NativeBackend, NativeContainer
from ..errors import ContainerError, UsageError

_RAW = argparse.RawDescriptionHelpFormatter
_SPOOL = 32 << 20  # tars up to this size stay in memory on their way through cp


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the file subcommands to the CLI parser."""
    cp = sub.add_parser(
        "cp", help="copy files between a container and the host", formatter_class=_RAW,
        description="Copy files or directories between a container (running or stopped) and "
        "the host.\nOne of SRC and DEST is CONTAINER:PATH; the other a host path, or - for a "
        "tar stream on stdin (SRC) or stdout (DEST).\nA directory copied into an existing "
        "directory goes inside it; a path ending in /. copies a directory's contents.",
        epilog="examples:\n  pydock cp web:/etc/nginx/nginx.conf .\n"
        "  pydock cp ./site web:/srv\n  pydock cp web:/var/log - | tar -t\n"
        "  tar -c app | pydock cp - web:/opt")
    cp.add_argument("src", metavar="SRC", help="CONTAINER:PATH, a host path, or -")
    cp.add_argument("dest", metavar="DEST", help="CONTAINER:PATH, a host path, or -")
    cp.add_argument("-a", "--archive", action="store_true",
                    help="keep the files' uid/gid (default: owned by root in the container, "
                    "by you on the host)")
    cp.add_argument("-L", "--follow-link", action="store_true",
                    help="copy what a symlink SRC points to instead of the link")
    cp.add_argument("-q", "--quiet", action="store_true",
                    help="do not print the 'Successfully copied' line")
    cp.set_defaults(func=cmd_cp)

    export = sub.add_parser(
        "export", help="write a container's filesystem as a tar archive",
        description="Write the root filesystem of a container (running or stopped) as a tar "
        "archive, without the contents of /proc, /sys, /dev and of mounts.")
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")
    export.add_argument("container", metavar="CONTAINER", help="container name or id")
    export.set_defaults(func=cmd_export)

    diff = sub.add_parser(
        "diff", help="list the files a container changed", formatter_class=_RAW,
        description="List the changes in a container's filesystem relative to its image:\n"
        "  A  added\n  C  changed (or a directory holding a change)\n  D  deleted")
    diff.add_argument("container", metavar="CONTAINER", help="container name or id")
    diff.set_defaults(func=cmd_diff)

    commit = sub.add_parser(
        "commit", help="create an image from a container's changes", formatter_class=_RAW,
        description="Create a new image from a container's image plus the changes in its "
        "filesystem, with the container's command, environment, working directory and user. "
        "Prints the new image id. A running container is not paused.",
        epilog="example:\n  pydock commit -c 'CMD [\"httpd\", \"-f\"]' -m 'add site' web "
        "mysite:1.0")
    commit.add_argument("-c", "--change", action="append", default=[], metavar="LINE",
                        help="a Dockerfile instruction to apply to the new image config (CMD, "
                        "ENTRYPOINT, ENV, EXPOSE, LABEL, USER, WORKDIR, ...); repeatable")
    commit.add_argument("-m", "--message", default="", help="commit message for the history")
    commit.add_argument("container", metavar="CONTAINER", help="container name or id")
    commit.add_argument("ref", metavar="REPOSITORY[:TAG]", nargs="?", help="tag the new image")
    commit.set_defaults(func=cmd_commit)


def _container(args: argparse.Namespace, ref: str) -> NativeContainer:
    return NativeBackend(args.store).container(ref)


# -- cp ----------------------------------------------------------------------------------------


def split_cp_arg(arg: str) -> tuple[str | None, str]:
    """``CONTAINER:PATH`` -> (container, path); a host path -> (None, path).

    Like docker: a path that starts with ``/`` or ``.`` is a host path even with a colon.
    """
    if arg.startswith(("/", ".")) or ":" not in arg:
        return None, arg
    name, _, path = arg.partition(":")
    if not name:
        raise UsageError(f"invalid cp argument {arg!r}: no container name before ':'")
    return name, path or "/"


def cmd_cp(args: argparse.Namespace) -> int:
    src_c, src = split_cp_arg(args.src)
    dest_c, dest = split_cp_arg(args.dest)
    if src_c and dest_c:
        raise UsageError("copying between containers is not supported: copy to the host first")
    if not src_c and not dest_c:
        raise UsageError("one of SRC and DEST must be CONTAINER:PATH")
    if src_c is not None:
        size = _cp_from(args, _container(args, src_c), src, dest)
        where = dest
    else:
        assert dest_c is not None
        size = _cp_to(args, src, _container(args, dest_c), dest)
        where = f"{dest_c}:{dest}"
    if not args.quiet and size is not None:
        print(f"Successfully copied {_size(size)} to {where}", file=sys.stderr)
    return 0


def _cp_from(args: argparse.Namespace, c: NativeContainer, path: str, dest: str) -> int | None:
    if dest == "-":
        out = sys.stdout.buffer
        if out.isatty():
            raise UsageError("cowardly refusing to write a tar archive to a terminal: "
                             "redirect stdout or give a host path")
        rootfs.copy_out(c, path, out, follow_link=args.follow_link)
        out.flush()
        return None
    info = rootfs.stat_path(c, path)
    if info is None:
        raise ContainerError(f"Could not find the file {path} in container {c.name}")
    src_dir = info.is_dir if args.follow_link or info.kind != "symlink" else False
    target_dir, new = _placement(src_dir=src_dir, dest=dest, dest_kind=_host_kind(dest),
                                 where=f"host path {dest}")
    if not os.path.isdir(target_dir):
        raise UsageError(f"the destination directory {target_dir} does not exist")
    owner = None if args.archive else (os.getuid(), os.getgid())
    old = rootfs.archive_name(path) or os.path.basename(path.rstrip("/."))

    def rename(name: str) -> str:
        assert new is not None
        if not rootfs.archive_name(path):  # "dir/.": the archive holds the contents
            return f"{new}/{name}"
        return new + name[len(old):] if name == old or name.startswith(old + "/") else name

    with tempfile.SpooledTemporaryFile(_SPOOL) as spool:
        rootfs.copy_out(c, path, spool, follow_link=args.follow_link)
        size = spool.tell()
        spool.seek(0)
        with tarfile.open(fileobj=spool, mode="r|") as tar:
            rootfs.safe_extract(tar, target_dir, owner=owner,
                                rename=None if new is None else rename,
                                error=lambda m: ContainerError(f"cp from {c.name}: {m}"))
    return int(size)


def _cp_to(args: argparse.Namespace, src: str, c: NativeContainer, dest: str) -> int | None:
    if src == "-":
        rootfs.copy_in(c, sys.stdin.buffer, dest, archive=args.archive)
        return None
    try:
        st = os.stat(src) if args.follow_link else os.lstat(src)
    except OSError as exc:
        raise UsageError(f"cannot copy {src}: {exc.strerror}") from None
    info = rootfs.stat_path(c, dest)
    dest_kind = None if info is None else "dir" if info.is_dir else "file"
    target_dir, new = _placement(src_dir=stat.S_ISDIR(st.st_mode), dest=dest,
                                 dest_kind=dest_kind, where=f"{c.name}:{dest}")
    real_src = os.path.realpath(src) if args.follow_link else src
    name = new or rootfs.archive_name(src)
    with tempfile.SpooledTemporaryFile(_SPOOL) as spool:
        with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as tar:
            if name:
                tar.add(real_src, arcname=name)
            else:  # "dir/." into an existing directory: only what it holds
                for entry in sorted(os.listdir(real_src)):
                    tar.add(os.path.join(real_src, entry), arcname=entry)
        size = spool.tell()
        spool.seek(0)
        rootfs.copy_in(c, spool, target_dir, archive=args.archive)
    return int(size)


def _placement(*, src_dir: bool, dest: str, dest_kind: str | None,
               where: str) -> tuple[str, str | None]:
    """Docker cp's rules: (directory to extract into, new name of the copy or None to keep
    the source's name)."""
    if dest_kind == "dir":
        return dest, None
    if dest_kind == "file":
        if src_dir:
            raise UsageError(f"cannot copy a directory to a file: {where}")
    elif dest.endswith("/") and not src_dir:
        raise UsageError(f"the destination directory {where} must exist")
    parent, _, new = dest.rstrip("/").rpartition("/")
    return parent or ("/" if dest.startswith("/") else "."), new


def _host_kind(path: str) -> str | None:
    if path.endswith("/.") or os.path.isdir(path):
        return "dir" if os.path.isdir(path) else None
    return "file" if os.path.lexists(path) else None


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n}"


# -- export, diff, commit ----------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    c = _container(args, args.container)
    if args.output:
        tmp = f"{args.output}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                rootfs.export(c, f)
            os.rename(tmp, args.output)
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return 0
    out = sys.stdout.buffer
    if out.isatty():
        raise UsageError("cowardly refusing to write a tar archive to a terminal: use -o FILE "
                         "or redirect stdout")
    rootfs.export(c, out)
    out.flush()
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    for kind, path in rootfs.diff(_container(args, args.container)):
        print(f"{kind} {path}")
    return 0


def cmd_commit(args: argparse.Namespace) -> int:
    image = rootfs.commit(_container(args, args.container), ref=args.ref,
                          changes=args.change, message=args.message)
    print(image.id)
    return 0
