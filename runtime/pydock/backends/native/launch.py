"""Start a container or an exec from a single-threaded process: plan, clone, await the exec.

Used by the monitor (monitor.py).  Everything the child needs is computed here, before the
clone; the child only runs child.py's steps.
"""

from __future__ import annotations

import errno
import functools
import json
import marshal
import os
import socket
import time
from pathlib import Path

from ...errors import ExecError, StartError
from . import caps
from . import syscalls as sc
from .cgroups import Cgroup
from .child import CONTAINER_FLAGS, Plan, Workload, container_main, exec_main
from .fdpass import send_fds
from .hostview import plan_host_view
from .layerview import lower_file
from .state import ContainerDir, LaunchSpec, cgroup_prefix
from .users import ExecUser, UserError
from .users import resolve as resolve_user

INIT_ENTRIES = ("proc", "sys", "dev", "etc", "etc/hosts", "etc/hostname", "etc/resolv.conf")
DEFAULT_HOSTS = (
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


@functools.lru_cache(maxsize=16)
def init_lower(store_root: Path) -> str:
    """The init layer as an overlay lowerdir relative to ``<store>/layers``."""
    return os.path.relpath(ensure_init_layer(store_root), store_root / "layers")


@functools.lru_cache(maxsize=16)
def stage_dir(store_root: Path) -> bytes:
    """An empty directory where a new container stages /proc, /sys and /dev (each container
    mounts a tmpfs over it in its own mount namespace; the host never sees a mount)."""
    path = store_root / "runtime" / "stage"
    path.mkdir(parents=True, exist_ok=True)
    return bytes(path)


@functools.lru_cache(maxsize=16)
def ensure_init_layer(store_root: Path) -> Path:
    """The shared read-only layer holding mount points (/proc, /dev, /etc/hosts, ...).

    Like Docker's init layer it sits between the image and the writable layer, so mount
    points never show up in ``diff`` or ``commit``.
    """
    path = store_root / "runtime" / "init"
    if path.exists():
        return path
    tmp = store_root / "runtime" / f".init.{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    for entry in INIT_ENTRIES:
        p = tmp / entry
        if "/" in entry:
            p.touch(mode=0o644)
        else:
            p.mkdir(mode=0o555 if entry in ("proc", "sys") else 0o755, exist_ok=True)
            os.chmod(p, 0o555 if entry in ("proc", "sys") else 0o755)
    try:
        os.rename(tmp, path)
    except OSError:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return path


@functools.lru_cache(maxsize=2)
def _host_resolv(host_network: bool) -> str:
    try:
        with open("/etc/resolv.conf") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    if host_network:
        return "\n".join(lines) + "\n"
    return "".join(line + "\n" for line in lines
                   if not (line.startswith("nameserver") and
                           line.split()[1:2] and line.split()[1].startswith(("127.", "::1"))))


ETC_FILES = ("hosts", "hostname", "resolv.conf")


def etc_files(cdir: ContainerDir) -> list[tuple[bytes, bytes]]:
    """(host file, path in the container) of the /etc files, written at create time (and
    again if gone, e.g. after a reboot)."""
    out = [(bytes(cdir.rw_dir / name), b"/etc/" + name.encode()) for name in ETC_FILES]
    if not os.path.exists(out[0][0]):
        write_etc_files(cdir)
    return out


def write_etc_files(cdir: ContainerDir, host_gateway: str | None = None
                    ) -> list[tuple[bytes, bytes]]:
    """Write the container's /etc/hosts, /etc/hostname and /etc/resolv.conf (a container on
    a bridge network gets its hosts file again at start, with its addresses and peers)."""
    spec = cdir.launch_spec
    files = {}
    if spec.network == "host":
        try:
            with open("/etc/hosts") as f:
                files["hosts"] = f.read()
        except OSError:
            files["hosts"] = DEFAULT_HOSTS
    else:
        files["hosts"] = DEFAULT_HOSTS + f"127.0.1.1\t{spec.hostname}\n"
    for host, ip in spec.extra_hosts:  # --add-host
        if ip == "host-gateway":
            ip = host_gateway or ""
        if ip:
            files["hosts"] += f"{ip}\t{host}\n"
    files["hostname"] = spec.hostname + "\n"
    files["resolv.conf"] = _host_resolv(spec.network == "host")
    out = []
    rw_dir = bytes(cdir.rw_dir)
    for name, text in files.items():
        path = rw_dir + b"/" + name.encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        out.append((path, b"/etc/" + name.encode()))
    return out


def workload_for(*, argv: list[str], env: list[str], cwd: str, user: str, tty: bool,
                 create_cwd: bool = True, resolved: ExecUser | None = None,
                 bounding_dropped: bool = False) -> Workload:
    """``bounding_dropped``: the process was prepared by child.prepare, which dropped the
    capabilities outside Docker's set from the bounding set already."""
    keep, drop = caps.default_sets()
    return Workload(argv=argv, env=env, cwd=cwd, user=user, tty=tty, cap_keep=keep,
                    cap_drop=[] if bounding_dropped else list(drop), create_cwd=create_cwd,
                    resolved=resolved)


def planned_user(cdir: ContainerDir, store_root: Path, host_view: object) -> ExecUser | None:
    """The container's user resolved through its image's /etc/passwd and /etc/group now,
    so PID 1 need not read them; None when the files PID 1 will see may differ from the
    image's (its writable layer or a volume has /etc, pydock:host shows the host's /etc)
    or the user is unknown (PID 1 then reports it)."""
    spec = cdir.launch_spec
    if host_view is not None or spec.mounts:  # a volume might hold /etc (or a link to it)
        return None
    if os.path.lexists(cdir.upper / "etc"):
        return None
    return _image_user(str(store_root / "layers"), tuple(cdir.config["layers"]), spec.user)


@functools.lru_cache(maxsize=64)
def _image_user(layers_dir: str, layers: tuple[str, ...], user: str) -> ExecUser | None:
    lowers = [os.path.join(layers_dir, layer) for layer in layers]
    texts = []
    for name in ("passwd", "group"):
        path = lower_file(lowers, ("etc", name))
        if path is None:
            return None
        if not path:
            texts.append("")
            continue
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                texts.append(f.read())
        except OSError:
            return None
    try:
        return resolve_user(user, texts[0], texts[1])
    except UserError:
        return None


def _mount_entries(cdir: ContainerDir) -> list[tuple[str, bytes, bytes, int, bytes | None]]:
    out: list[tuple[str, bytes, bytes, int, bytes | None]] = []
    for m in cdir.launch_spec.mounts:
        if m.kind == "bind":
            out.append(("bind", m.source.encode(), m.target.encode(),
                        sc.MS_RDONLY if m.readonly else 0, None))
        else:
            # Docker's defaults: noexec,nosuid,nodev; "exec" and "suid" lift theirs, "dev"
            # does not (every mount of a container is nodev, see child.prepare).
            opts = [o for o in m.options.split(",") if o]
            flags = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
            data = []
            for o in opts:
                if o == "ro":
                    flags |= sc.MS_RDONLY
                elif o == "exec":
                    flags &= ~sc.MS_NOEXEC
                elif o == "suid":
                    flags &= ~sc.MS_NOSUID
                elif o in ("rw", "dev", "nosuid", "nodev", "noexec"):
                    continue
                else:
                    data.append(o)
            out.append(("tmpfs", b"tmpfs", m.target.encode(), flags,
                        ",".join(data).encode() or None))
    return out


SETUP_TIMEOUT = 30.0


def read_error(fd: int, timeout: float = SETUP_TIMEOUT) -> dict[str, object] | None:
    """Read the child's error report; None when the pipe closed empty (exec succeeded).

    A child stuck in its setup (say, /etc/passwd made a FIFO by the image) is reported
    after ``timeout`` seconds instead of blocking the monitor for ever.
    """
    import select
    chunks = []
    deadline = time.monotonic() + timeout
    while True:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            os.close(fd)
            return {"step": "setup", "message": f"no exec after {timeout:g} s (stuck in "
                    "a setup step?)", "exit_code": 125}
        try:
            data = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not data:
            break
        chunks.append(data)
    os.close(fd)
    if not chunks:
        return None
    try:
        doc = marshal.loads(b"".join(chunks))
        if not isinstance(doc, dict):
            raise ValueError(doc)
        return doc
    except (ValueError, EOFError, TypeError):
        return {"step": "unknown", "message": b"".join(chunks).decode(errors="replace"),
                "exit_code": 125}


def describe(report: dict[str, object]) -> str:
    step, message = report.get("step"), report.get("message")
    if step == "exec":
        return str(message)
    filename = report.get("filename")
    return f"{step}: {message}" + (f": {filename}" if filename else "")


def _fresh_workdir(work: Path) -> None:
    """Overlay refuses a workdir left by a volatile mount (a restart): start it empty."""
    work.parent.joinpath("upper").mkdir(parents=True, exist_ok=True)  # gone after a reboot
    work.mkdir(exist_ok=True)
    if any(work.iterdir()):
        import shutil
        shutil.rmtree(work)
        work.mkdir()


class Console:
    """A socket pair on which a tty workload sends back the master of its pty."""

    def __init__(self, winsize: bytes) -> None:
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.winsize = winsize

    def attach(self, workload: Workload) -> None:
        workload.console_fd = self.theirs.fileno()
        workload.winsize = self.winsize

    def receive(self) -> int:
        self.theirs.close()
        _, fds, _, _ = socket.recv_fds(self.ours, 64, 1)
        self.ours.close()
        if not fds:
            raise StartError("the container did not set up its terminal")
        return fds[0]

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


class Zygote:
    """A container PID 1 cloned ahead of time, waiting for its plan on ``sock``.

    The factory (factory.py) clones it as a child of the monitor and it runs the
    plan-independent setup (``prepare``) while nobody waits; start_container only sends
    the plan.  Zygotes serve containers without resource limits (those need no cgroup).
    """

    def __init__(self, pid: int, sock: socket.socket, *, new_net: bool, join_net: bool,
                 stage: bytes) -> None:
        self.pid, self.sock = pid, sock
        self.new_net, self.join_net = new_net and not join_net, join_net
        self.stage = stage
        self.alive = True  # False once the monitor reaped it (it died waiting)

    def fits(self, spec: LaunchSpec, stage: bytes, join_net: bool = False) -> bool:
        new_net = spec.network != "host" and not join_net
        return (self.new_net == new_net and self.join_net == join_net and self.stage == stage
                and not needs_cgroup(spec))

    def launch(self, plan: Plan, console_fd: int) -> None:
        fds = [*plan.stdio, *plan.cgroup_fds, plan.errfd] + ([console_fd] if console_fd >= 0
                                                             else [])
        if plan.netns_fd >= 0:
            fds.append(plan.netns_fd)  # last: zygote_main takes it from the end
        try:  # out of the factory's SCHED_IDLE: from now on a start waits for it
            os.sched_setscheduler(self.pid, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass
        send_fds(self.sock, plan.to_wire(), fds)
        self.sock.close()

    def discard(self) -> None:
        """End the waiting child (unless already reaped: its pid may be another's now)."""
        discard_all([self])


def discard_all(zygotes: list[Zygote]) -> None:
    """End waiting zygotes: all are killed first, then reaped, so that they die (and
    their namespaces go) side by side."""
    killed = []
    for zygote in zygotes:
        zygote.sock.close()
        if zygote.alive:
            zygote.alive = False
            try:
                os.kill(zygote.pid, 9)
                killed.append(zygote.pid)
            except ProcessLookupError:
                pass
    for pid in killed:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def needs_cgroup(spec: LaunchSpec) -> bool:
    """Only resource limits need a cgroup: a container's processes all live in its PID
    namespace and die with its PID 1, so there is nothing else to track (and no cgroup
    to create, migrate into and remove: ~1 ms of kernel time saved per container)."""
    return bool(spec.memory or spec.pids_limit or spec.cpus)


def start_container(cdir: ContainerDir, store_root: Path,
                    stdio: tuple[int, int, int] | None,
                    console: Console | None = None,
                    zygote: Zygote | None = None,
                    stdin_fd: int | None = None,
                    netns_fd: int | None = None) -> tuple[int, Cgroup]:
    """Clone the container's PID 1; returns (host pid, cgroup) once its workload exec'd.
    ``netns_fd``: a network namespace (bridge networks) PID 1 joins before its workload.

    Raises StartError naming the failed setup step; nothing of the attempt remains then.
    """
    spec = cdir.launch_spec
    config = cdir.config
    _fresh_workdir(cdir.work)
    layers = ":".join([init_lower(store_root), *config["layers"]])
    options = (f"lowerdir={layers},upperdir={cdir.upper},workdir={cdir.work},volatile")
    join_net = netns_fd is not None
    new_net = spec.network != "host" and not join_net
    stage = stage_dir(store_root)
    if zygote is not None and not zygote.fits(spec, stage, join_net):
        zygote.discard()
        zygote = None
    if needs_cgroup(spec):
        cgroup = Cgroup.create(f"{cgroup_prefix(cdir.path.parent)}{cdir.id[:12]}",
                               memory=spec.memory, pids=spec.pids_limit, cpus=spec.cpus)
    else:
        cgroup = Cgroup()
    opened: list[int] = []
    try:
        if stdio is None:
            null = stdin_fd if stdin_fd is not None else \
                os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
            out = os.open(cdir.stdout_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                          0o640)
            err = os.open(cdir.stderr_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                          0o640)
            opened += [null, out, err]
            stdio = (null, out, err)
        cgroup_fds = cgroup.procs_files(skip_unified=True)
        opened += cgroup_fds
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        opened.append(wfd)
        cgfd = cgroup.open_unified()
        if cgfd is not None:
            opened.append(cgfd)
        host_view = plan_host_view(store_root, config["layers"])
        plan = Plan(
            layers_dir=bytes(store_root / "layers"),
            overlay_options=options.encode(),
            rootfs=bytes(cdir.rootfs),
            hostname=spec.hostname.encode(),
            etc_files=etc_files(cdir),
            mounts=_mount_entries(cdir),
            new_net=new_net,
            netns_fd=-1 if netns_fd is None else netns_fd,
            init=spec.init,
            stdio=stdio,
            cgroup_fds=cgroup_fds,
            errfd=wfd,
            stage=stage,
            host_view=host_view,
            workload=workload_for(argv=list(spec.argv), env=list(spec.env),
                                  cwd=spec.working_dir, user=spec.user, tty=spec.tty,
                                  resolved=planned_user(cdir, store_root, host_view),
                                  bounding_dropped=True),
        )
        if console is not None:
            console.attach(plan.workload)
        if len(plan.overlay_options) > 4000:
            raise StartError(f"container {cdir.id[:12]}: image has too many layers "
                             f"({len(config['layers'])}) for one overlay mount")
        if zygote is not None:
            try:
                zygote.launch(plan, plan.workload.console_fd)
                pid = zygote.pid
            except OSError:  # it died waiting: clone one now
                zygote.discard()
                zygote = None
        if zygote is None:
            pid = sc.clone3(CONTAINER_FLAGS | (sc.CLONE_NEWNET if new_net else 0),
                            cgroup_fd=cgfd)
            if pid == 0:
                container_main(plan)
        for fd in opened:
            os.close(fd)
        opened = []
        report = read_error(rfd)
        if report is not None:
            _kill_and_reap(pid)
            cgroup.remove()
            name = cdir.config.get("name", cdir.id[:12])
            raise StartError(f"container {name}: {describe(report)}",
                             exit_code=int(report.get("exit_code") or 125))  # type: ignore
        return pid, cgroup
    except BaseException:
        for fd in opened:
            os.close(fd)
        if zygote is not None:
            zygote.discard()
        cgroup.remove()
        raise


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


NS_ORDER = ("ipc", "uts", "net", "pid", "mnt")


def ns_fds(pid: int) -> list[int]:
    """Open the namespaces of a container's PID 1 (mount last: it changes our root)."""
    fds = []
    for ns in NS_ORDER:
        try:
            fds.append(os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC))
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            if exc.errno in (errno.ENOENT, errno.ESRCH):
                raise ExecError("container is not running", exit_code=125) from None
            raise
    return fds


@functools.lru_cache(maxsize=1)
def _own_pid_ns() -> int:
    """This process's PID namespace (an fd kept open), to return to after an exec."""
    return os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)


def start_exec(pid1: int, cgroup: Cgroup, workload: Workload,
               stdio: tuple[int, int, int], console: Console | None = None) -> int:
    """Clone a process that joins the container and execs ``workload``; returns its pid.

    The clone itself is made in the container's PID namespace (this process joins it for
    its children and comes back), so the command is this process's child, with nothing
    in between to fork or to relay its exit status.
    Raises ExecError when the command could not be started (127: not found).
    """
    fds = ns_fds(pid1)
    cg_fds = cgroup.procs_files(skip_unified=True)
    try:
        cgfd = cgroup.open_unified()
    except FileNotFoundError:
        cgfd = None
        cg_fds = cgroup.procs_files()
    if console is not None:
        console.attach(workload)
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    pid_ns = fds[NS_ORDER.index("pid")]
    try:
        own = _own_pid_ns()
        sc.setns(pid_ns, sc.CLONE_NEWPID)  # for the next child only
        try:
            pid = sc.clone3(0, cgroup_fd=cgfd)
            if pid == 0:
                os.close(rfd)
                exec_main([fd for fd in fds if fd != pid_ns], cg_fds, stdio, workload, wfd)
        finally:
            sc.setns(own, sc.CLONE_NEWPID)
    except BaseException:
        os.close(rfd)
        raise
    finally:
        for fd in (*fds, *cg_fds, wfd, *([cgfd] if cgfd is not None else [])):
            os.close(fd)
    report = read_error(rfd)
    if report is not None:
        _kill_and_reap(pid)
        raise ExecError(describe(report), exit_code=int(report.get("exit_code") or 126))  # type: ignore
    return pid


def send(sock: socket.socket, doc: dict[str, object], fds: list[int] | None = None) -> None:
    data = json.dumps(doc).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


MAX_FDS = 200  # a message's file descriptors: stdio, a netns, published ports' sockets


def recv(sock: socket.socket) -> tuple[dict[str, object] | None, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, MAX_FDS)
    if not data:
        return None, fds
    return json.loads(data), fds
