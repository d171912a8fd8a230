"""Container commands of the CLI: create, start, run, exec, logs, stop, kill, wait, rm, ps,
inspect.  Each only calls the Python API (NativeBackend / NativeContainer)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

from ..backends.base import Status
from ..backends.native.backend import NativeBackend, NativeContainer
from ..errors import ContainerNotFound, ImageNotFound, PydockError, StartError
from ..spec import (
    RunOptions,
    parse_cpus,
    parse_env,
    parse_size,
    parse_tmpfs,
    parse_volume,
    read_env_file,
)
from . import terminal
from .format import ago, format_table, truncate


def backend(args: argparse.Namespace) -> NativeBackend:
    return NativeBackend(args.store, network_pool=0)  # one container: no namespace pool


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--interactive", action="store_true",
                   help="keep stdin open and attach it to the container")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    p.add_argument("--name", help="assign a name to the container")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY[=VALUE]",
                   help="set an environment variable (KEY alone copies the host's value)")
    p.add_argument("--env-file", action="append", default=[], metavar="FILE",
                   help="read KEY=VALUE lines from a file")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("-u", "--user", help="user[:group] name or id inside the container")
    p.add_argument("-h", "--hostname", help="container host name (default: short id)")
    p.add_argument("-l", "--label", action="append", default=[], metavar="KEY=VALUE",
                   help="set a label on the container")
    p.add_argument("-v", "--volume", action="append", default=[],
                   metavar="HOST:CONTAINER[:ro]", help="bind mount a host path")
    p.add_argument("--tmpfs", action="append", default=[], metavar="PATH[:OPTIONS]",
                   help="mount a tmpfs, e.g. /run:size=64m")
    p.add_argument("-m", "--memory", help="memory limit, e.g. 256m (OOM kills are reported)")
    p.add_argument("--pids-limit", type=int, help="maximum number of processes")
    p.add_argument("--cpus", help="CPU quota in CPUs, e.g. 0.5")
    p.add_argument("--network", "--net", default="bridge", metavar="NETWORK",
                   help="bridge: own network namespace on the default bridge, reachable "
                        "from the host by its IP (default); none: loopback only; host: "
                        "share the host's network; or a network made with `network create`")
    p.add_argument("--network-alias", action="append", default=[], metavar="ALIAS",
                   help="another name of the container on its user network")
    p.add_argument("-p", "--publish", action="append", default=[],
                   metavar="[IP:][HOSTPORT:]PORT[/udp]",
                   help="publish a container port on the host: without HOSTPORT a free "
                        "port on 127.0.0.1 (see `pydock port`), with one on 0.0.0.0 "
                        "unless IP is given")
    p.add_argument("-P", "--publish-all", action="store_true",
                   help="publish every port the image EXPOSEs on a free port of 127.0.0.1")
    p.add_argument("--add-host", action="append", default=[], metavar="HOST:IP",
                   help="add an /etc/hosts line; IP host-gateway: the host (the bridge's "
                        "address)")
    p.add_argument("--init", action="store_true",
                   help="run a small init as PID 1 that forwards signals and reaps zombies "
                        "(default for -d)")
    p.add_argument("--entrypoint", help="override the image's ENTRYPOINT ('' clears it)")
    p.add_argument("--stop-signal", help="signal to stop the container (default: the "
                                         "image's STOPSIGNAL or SIGTERM)")
    p.add_argument("--stop-timeout", type=float, help="seconds to wait before SIGKILL on stop")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND",
                   help="command and arguments (default: the image's CMD)")


def run_options(args: argparse.Namespace, *, detach: bool, auto_remove: bool) -> RunOptions:
    host_env = dict(os.environ)
    env: list[str] = []
    for path in args.env_file:
        env += read_env_file(path, host_env=host_env)
    env += parse_env(args.env, host_env=host_env)
    labels = {}
    for item in args.label:
        key, _, value = item.partition("=")
        labels[key] = value
    kw: dict[str, Any] = {}
    if args.entrypoint is not None:
        kw["entrypoint"] = args.entrypoint
    if (args.publish or args.publish_all) and args.network == "host":
        print("WARNING: Published ports are discarded when using host network mode",
              file=sys.stderr)
    return RunOptions(
        command=list(args.command) or None,
        env=env,
        working_dir=args.workdir,
        user=args.user,
        hostname=args.hostname,
        name=args.name,
        labels=labels,
        mounts=[*map(parse_volume, args.volume), *map(parse_tmpfs, args.tmpfs)],
        network=args.network,
        network_aliases=args.network_alias,
        extra_hosts=args.add_host,
        ports=args.publish,
        publish_all=args.publish_all,
        init=args.init or detach,
        tty=args.tty,
        stdin_open=args.interactive,
        auto_remove=auto_remove,
        memory=None if args.memory is None else parse_size(args.memory, what="memory"),
        pids_limit=args.pids_limit,
        cpus=None if args.cpus is None else parse_cpus(args.cpus),
        stop_signal=args.stop_signal,
        stop_timeout=args.stop_timeout,
        **kw,
    )


# -- create / start / run -------------------------------------------------------------------

def cmd_create(args: argparse.Namespace) -> int:
    try:
        c = backend(args).create(args.image, run_options(args, detach=False,
                                                         auto_remove=False))
    except PydockError as exc:
        exc.exit_code = ENGINE_ERROR
        raise
    print(c.id)
    return 0


ENGINE_ERROR = 125  # docker run's status when the container could not be run at all


def cmd_run(args: argparse.Namespace) -> int:
    """``run``: the container's exit status; 125 when pydock itself failed (like docker),
    126/127 when the command could not be executed."""
    try:
        return _run(args)
    except StartError as exc:
        if exc.exit_code in (126, 127):
            raise
        exc.exit_code = ENGINE_ERROR
        raise
    except PydockError as exc:
        exc.exit_code = ENGINE_ERROR
        raise


def _run(args: argparse.Namespace) -> int:
    b = backend(args)
    # --rm: the monitor deletes it when it exits, even if this process was killed.
    c = b.create(args.image, run_options(args, detach=args.detach, auto_remove=args.rm))
    if args.detach:
        try:
            c.start(detach=True)
        except StartError:
            if args.rm:
                c.remove(force=True)
            raise
        print(c.id)
        return 0
    try:
        return attach_run(b, c, interactive=args.interactive, tty=args.tty, direct=args.rm)
    finally:
        if args.rm:
            try:
                c.remove(force=True)
            except PydockError:
                pass
        b.close()


def _running(c: NativeContainer) -> bool:
    try:
        return c.status is Status.RUNNING
    except ContainerNotFound:  # --rm: already gone
        return False


def attach_run(b: NativeBackend, c: NativeContainer, *, interactive: bool, tty: bool,
               from_end: bool = False, direct: bool = False) -> int:
    """Start ``c`` under this process's monitor and stream its output until it exits;
    ``from_end``: skip what earlier runs logged (``start -a``); ``direct``: the container
    writes straight to our stdout/stderr (``--rm``: its logs go with it anyway)."""
    if tty:
        master = c.start(winsize=terminal.winsize())
        assert master is not None
        with terminal.Terminal(master) as term:
            term.copy(log=None if direct else c.dir.stdout_log, done=lambda: not _running(c),
                      stdin=interactive)
        return c.wait().exit_code
    skip = terminal.LogFollower(c.dir.stdout_log, c.dir.stderr_log, tail=0).offsets \
        if from_end else [0, 0]
    if direct:
        out, err = os.dup(1), os.dup(2)
    else:
        out = os.open(c.dir.stdout_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        err = os.open(c.dir.stderr_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    stdin = 0 if interactive else os.open(os.devnull, os.O_RDONLY)
    try:
        c.start(stdio=[stdin, out, err])
    finally:
        os.close(out)
        os.close(err)
        if stdin != 0:
            os.close(stdin)
    follower = terminal.LogFollower(c.dir.stdout_log, c.dir.stderr_log)
    follower.offsets = skip
    if direct:
        follower.files = []
    interrupts = 0

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal interrupts
        interrupts += 1
        try:
            c.kill("SIGKILL" if interrupts > 1 else signum)
        except PydockError:
            pass

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM,
                                                      signal.SIGHUP)}
    try:
        while True:
            follower.pump()
            try:
                status = c.wait(timeout=0.05)
                break
            except TimeoutError:
                continue
        follower.pump()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if status.oom_killed:
        print(f"pydock: container {c.name} was killed: out of memory", file=sys.stderr)
    return status.exit_code


def cmd_start(args: argparse.Namespace) -> int:
    b = backend(args)
    failed = 0
    for ref in args.containers:
        try:
            c = b.container(ref)
            if args.attach:
                status = attach_run(b, c, interactive=args.interactive, tty=c.spec.tty,
                                    from_end=True)
                b.close()
                return status
            if c.status is not Status.RUNNING:
                c.start(detach=True)
            print(ref)
        except PydockError as exc:
            print(f"pydock: error: {exc}", file=sys.stderr)
            failed = exc.exit_code
    return failed


# -- exec -----------------------------------------------------------------------------------

def cmd_exec(args: argparse.Namespace) -> int:
    b = backend(args)
    c = b.container(args.container)
    env = parse_env(args.env, host_env=dict(os.environ))
    try:
        if args.tty:
            exec_id, master = c.exec_start(args.command, env=env, user=args.user,
                                           workdir=args.workdir, tty=True,
                                           winsize=terminal.winsize())
            assert master is not None
            with terminal.Terminal(master) as term:
                term.copy(log=None, done=lambda: False, stdin=args.interactive)
            return c.exec_wait(exec_id)
        stdin = 0 if args.interactive else os.open(os.devnull, os.O_RDONLY)
        exec_id, _ = c.exec_start(args.command, stdio=[stdin, 1, 2], env=env, user=args.user,
                                  workdir=args.workdir)
        return c.exec_wait(exec_id)
    finally:
        b.close()


# -- logs / stop / kill / wait / rm ------------------------------------------------------------

def cmd_logs(args: argparse.Namespace) -> int:
    c = backend(args).container(args.container)
    follower = terminal.LogFollower(c.dir.stdout_log, c.dir.stderr_log, tail=args.tail)
    follower.pump()
    while args.follow and c.status is Status.RUNNING:
        time.sleep(0.05)
        follower.pump()
    follower.pump()
    return 0


def each(args: argparse.Namespace, action: Any, b: Any = None) -> int:
    """``action(container, ref)`` for each of ``args.containers`` on ``b`` (default: the
    native backend; the docker commands pass theirs); errors are printed, exit 1."""
    b = b or backend(args)
    status = 0
    for ref in args.containers:
        try:
            action(b.container(ref), ref)
        except PydockError as exc:
            print(f"pydock: error: {exc}", file=sys.stderr)
            status = 1
    return status


def cmd_stop(args: argparse.Namespace, b: Any = None) -> int:
    timeout = None if args.time is None else (1e9 if args.time < 0 else args.time)  # -1: ever
    return each(args, lambda c, ref: (c.stop(timeout), print(ref)), b)


def cmd_kill(args: argparse.Namespace, b: Any = None) -> int:
    return each(args, lambda c, ref: (c.kill(args.signal), print(ref)), b)


def cmd_wait(args: argparse.Namespace) -> int:
    b = backend(args)
    status = 0
    for ref in args.containers:
        try:
            c = b.container(ref)
        except ContainerNotFound:
            record = b.table.exit_record(ref)  # a --rm container gone meanwhile (by id)
            if record is None:
                print(f"pydock: error: no such container: {ref}", file=sys.stderr)
                status = 1
            else:
                print(record.get("exit_code"))
            continue
        try:
            while c.status is Status.CREATED and c.dir.read_state().get("exit_code") is None:
                time.sleep(0.1)  # docker waits for a created container to run and exit
            print(c.wait().exit_code)
        except PydockError as exc:
            print(f"pydock: error: {exc}", file=sys.stderr)
            status = 1
    return status


def cmd_rm(args: argparse.Namespace, b: Any = None) -> int:
    b = b or backend(args)
    try:
        return each(args, lambda c, ref: (c.remove(force=args.force), print(ref)), b)
    finally:
        b.close()  # the last container gone: nothing of the store stays on the host


# -- ps / inspect -----------------------------------------------------------------------------

def status_text(state: dict[str, Any]) -> str:
    status = state.get("status")
    if status == "running":
        return f"Up {ago(state.get('started_at'), suffix='')}".rstrip()
    if status == "exited":
        return f"Exited ({state.get('exit_code')}) {ago(state.get('finished_at'))}"
    return "Created"


def cmd_ps(args: argparse.Namespace) -> int:
    rows = []
    for c in backend(args).containers(all=args.all):
        state = c.state()
        if args.quiet:
            print(c.id if args.no_trunc else c.id[:12])
            continue
        command = " ".join(c.spec.argv)
        rows.append([c.id if args.no_trunc else c.id[:12], truncate(c.spec.image_name, 30),
                     f'"{command if args.no_trunc else truncate(command, 20)}"',
                     ago(c.dir.config.get("created")), status_text(state),
                     ", ".join(f"{ip}:{port}->{key}" for key, bindings in c.ports().items()
                               for ip, port in bindings), c.name])
    if not args.quiet:
        print(format_table([["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS",
                             "PORTS", "NAMES"], *rows]))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    b = backend(args)
    docs = []
    status = 0
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
            from ..inspect_image import inspect_image_doc
            docs.append(inspect_image_doc(b.store, ref))
        except ImageNotFound:
            print(f"pydock: error: no such object: {ref}", file=sys.stderr)
            status = 1
    print(json.dumps(docs, indent=4))
    return status


def _exit_125_on_usage_errors(p: argparse.ArgumentParser) -> None:
    """docker run/create exit 125 on a bad flag too: never mistaken for the command's."""
    def error(message: str) -> None:  # type: ignore[misc]
        p.print_usage(sys.stderr)
        p.exit(ENGINE_ERROR, f"{p.prog}: error: {message}\n")
    p.error = error  # type: ignore[method-assign,assignment]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the container subcommands to the CLI parser."""
    p = sub.add_parser("run", help="create and start a container, stream its output",
                       add_help=False,
                       description="Create a container from IMAGE and run COMMAND in it. The "
                                   "exit status is the container's.")
    p.add_argument("--help", action="help", help="show this help message and exit")
    _exit_125_on_usage_errors(p)
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    p.add_argument("-d", "--detach", action="store_true",
                   help="run in the background and print the container id")
    add_run_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("create", help="create a container (prints its id)", add_help=False,
                       description="Create a container without starting it.")
    _exit_125_on_usage_errors(p)
    p.add_argument("--help", action="help", help="show this help message and exit")
    add_run_options(p)
    p.set_defaults(func=cmd_create)

    p = sub.add_parser("start", help="start created or stopped containers",
                       description="Start containers in the background (or attached with -a).")
    p.add_argument("-a", "--attach", action="store_true", help="attach output, wait for exit")
    p.add_argument("-i", "--interactive", action="store_true", help="attach stdin")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("exec", help="run a command in a running container",
                       description="Run COMMAND in a running container; its exit status is "
                                   "the command's (127: not found).")
    p.add_argument("-i", "--interactive", action="store_true", help="attach stdin")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY[=VALUE]")
    p.add_argument("-u", "--user", help="user[:group] (default: the container's user)")
    p.add_argument("-w", "--workdir", help="working directory (default: the container's)")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("logs", help="print a container's output",
                       description="Print what a container wrote to stdout and stderr.")
    p.add_argument("-f", "--follow", action="store_true", help="follow until it exits")
    p.add_argument("-n", "--tail", type=int, help="only the last N lines")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_logs)

    for name, func, text in (("stop", cmd_stop, "stop containers (STOPSIGNAL, then SIGKILL)"),
                             ("kill", cmd_kill, "send a signal to containers (SIGKILL)"),
                             ("wait", cmd_wait, "wait for containers to exit, print codes"),
                             ("rm", cmd_rm, "remove containers and their writable layers")):
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        if name == "stop":
            p.add_argument("-t", "--time", type=float,
                           help="seconds before SIGKILL (default: the container's, 10)")
        if name == "kill":
            p.add_argument("-s", "--signal", default="SIGKILL", help="signal (default SIGKILL)")
        if name == "rm":
            p.add_argument("-f", "--force", action="store_true",
                           help="kill and remove running containers")
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=func)

    p = sub.add_parser("ps", help="list containers", description="List containers.")
    p.add_argument("-a", "--all", action="store_true", help="include stopped containers")
    p.add_argument("-q", "--quiet", action="store_true", help="only ids")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    p.set_defaults(func=cmd_ps)

    p = sub.add_parser("inspect", help="JSON details of containers or images",
                       description="Print docker-inspect-shaped JSON for containers or images.")
    p.add_argument("--type", choices=["container", "image"], help="only this kind of object")
    p.add_argument("objects", nargs="+", metavar="NAME|ID")
    p.set_defaults(func=cmd_inspect)
