"""The container commands with ``--backend docker`` (or PYDOCK_BACKEND=docker): the same
arguments as the native ones (containers.py), carried out by the DockerBackend API."""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ContainerNotFound, ImageNotFound, PydockError, UsageError
from . import containers
from .containers import ENGINE_ERROR, run_options, status_text
from .format import ago, format_table, truncate

if TYPE_CHECKING:
    from ..backends.docker import DockerBackend, DockerContainer


def backend(args: argparse.Namespace) -> DockerBackend:
    """The daemon of DOCKER_HOST / the docker context; containers outlive the command."""
    from ..backends.docker import DockerBackend
    return DockerBackend(session_label=None)


def route(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    """The docker implementation of ``args.subcommand`` (a clear error for the others)."""
    command = COMMANDS.get(args.subcommand)
    if command is not None:
        return command

    def unsupported(_: argparse.Namespace) -> int:
        raise UsageError(f"`pydock {args.subcommand}` works with the native backend only; "
                         "with --backend docker use the docker CLI for it")
    return unsupported


def _engine_errors(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except PydockError as exc:
            if getattr(exc, "exit_code", 1) not in (126, 127):
                exc.exit_code = ENGINE_ERROR  # like docker run / create
            raise
    return wrapped


@_engine_errors
def cmd_create(args: argparse.Namespace) -> int:
    print(backend(args).create(args.image, run_options(args, detach=False,
                                                       auto_remove=False)).id)
    return 0


@_engine_errors
def cmd_run(args: argparse.Namespace) -> int:
    if args.tty or (args.interactive and not args.detach):
        raise UsageError("run -i / -t need the native backend (the docker backend does not "
                         "attach a terminal or stdin)")
    b = backend(args)
    c = b.create(args.image, run_options(args, detach=args.detach,
                                         auto_remove=args.rm and args.detach))
    if args.detach:
        c.start()
        print(c.id)
        return 0
    try:
        return _attached(c)
    finally:
        if args.rm:
            c.remove(force=True)


def _attached(c: DockerContainer) -> int:
    """Start ``c`` and copy its output here until it exits (attached before the start, so
    nothing is missed); signals are forwarded; its exit status."""
    sock = c.api.attach_socket(c.id, params={"stdout": 1, "stderr": 1, "stream": 1})
    raw = getattr(sock, "_sock", sock)

    def forward(signum: int, _frame: object) -> None:
        try:
            c.kill(signum)
        except PydockError:
            pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        c.start()
        buf = bytearray()
        while True:
            select.select([raw], [], [])
            chunk = raw.recv(65536)
            if not chunk:
                break
            buf += chunk
            while len(buf) >= 8 and len(buf) >= 8 + int.from_bytes(buf[4:8], "big"):
                size = int.from_bytes(buf[4:8], "big")
                os.write(2 if buf[0] == 2 else 1, bytes(buf[8:8 + size]))
                del buf[:8 + size]
        status = c.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        sock.close()
        raw.close()
    if status.oom_killed:
        print(f"pydock: container {c.name} was killed: out of memory", file=sys.stderr)
    return status.exit_code


def cmd_start(args: argparse.Namespace) -> int:
    if args.attach or args.interactive:
        raise UsageError("start -a / -i need the native backend")
    return containers.each(args, lambda c, ref: (c.start(), print(ref)), backend(args))


def cmd_exec(args: argparse.Namespace) -> int:
    if args.tty:
        raise UsageError("exec -t needs the native backend (no terminal through docker yet)")
    from ..spec import parse_env
    c = backend(args).container(args.container)
    stdin = sys.stdin.buffer.read() if args.interactive else None
    result = c.exec(args.command, env=parse_env(args.env, host_env=dict(os.environ)),
                    user=args.user, workdir=args.workdir, stdin=stdin)
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(result.stderr)
    sys.stderr.flush()
    return result.exit_code


def cmd_logs(args: argparse.Namespace) -> int:
    c = backend(args).container(args.container)
    shown = [0, 0]

    def pump() -> None:
        for i, data in enumerate(c.logs()):
            new = data[shown[i]:]
            if args.tail is not None and shown[i] == 0:
                new = b"".join(new.splitlines(keepends=True)[-args.tail:] if args.tail else [])
            shown[i] = len(data)
            (sys.stdout if i == 0 else sys.stderr).buffer.write(new)
            (sys.stdout if i == 0 else sys.stderr).flush()
    pump()
    while args.follow and c.state()["status"] == "running":
        time.sleep(0.1)
        pump()
    pump()
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    return containers.cmd_stop(args, backend(args))


def cmd_kill(args: argparse.Namespace) -> int:
    return containers.cmd_kill(args, backend(args))


def cmd_wait(args: argparse.Namespace) -> int:
    return containers.each(args, lambda c, ref: print(c.wait().exit_code), backend(args))


def cmd_rm(args: argparse.Namespace) -> int:
    return containers.cmd_rm(args, backend(args))


def cmd_ps(args: argparse.Namespace) -> int:
    rows = []
    for c in backend(args).containers(all=args.all):
        if args.quiet:
            print(c.id if args.no_trunc else c.id[:12])
            continue
        doc = c.inspect()
        command = " ".join(c.spec.argv)
        rows.append([c.id if args.no_trunc else c.id[:12], truncate(c.spec.image_name, 30),
                     f'"{command if args.no_trunc else truncate(command, 20)}"',
                     ago(doc.get("Created")), status_text(c.state()), "", c.name])
    if not args.quiet:
        print(format_table([["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS",
                             "PORTS", "NAMES"], *rows]))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    b = backend(args)
    docs, status = [], 0
    for ref in args.objects:
        try:
            if args.type in (None, "container"):
                docs.append(b.container(ref).inspect())
                continue
        except ContainerNotFound:
            if args.type == "container":
                print(f"pydock: error: no such container: {ref}", file=sys.stderr)
                status = 1
                continue
        try:
            b.image(ref)
            docs.append(b.api.inspect_image(ref))
        except ImageNotFound:
            print(f"pydock: error: no such object: {ref}", file=sys.stderr)
            status = 1
    print(json.dumps(docs, indent=4))
    return status


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "create": cmd_create, "run": cmd_run, "start": cmd_start, "exec": cmd_exec,
    "logs": cmd_logs, "stop": cmd_stop, "kill": cmd_kill, "wait": cmd_wait, "rm": cmd_rm,
    "ps": cmd_ps, "inspect": cmd_inspect,
}


def _ports_commands() -> None:
    from .ports import DOCKER_COMMANDS
    COMMANDS.update(DOCKER_COMMANDS)


_ports_commands()
