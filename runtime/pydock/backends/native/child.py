"""What runs inside a new container: an ordered list of named setup steps, then exec.

The parent (the monitor) precomputes a ``Plan`` of bytes and ints; the cloned child (PID 1 of
the new PID namespace) runs the steps.  A failing step writes ``{"step", "errno", "message",
"exit_code"}`` to the error pipe (marshal data: nothing to import after pivot_root) and
exits, so the user sees e.g. ``mount overlay: Invalid argument`` instead of a dead child.
A successful exec closes the pipe (it is close-on-exec), which tells the parent the
workload is running.

This module is what the zygote factory (factory.py) runs, and every page of it a zygote
writes costs a copy-on-write fault, so it imports only C modules and small ones: ``_signal``
and ``_socket`` (their wrappers bring enum and functools), no dataclasses, no pickle and no
json (a plan and an error report travel as ``marshal`` data).
"""

from __future__ import annotations

import _signal
import _socket
import errno
import fcntl
import gc
import marshal
import os
import struct

from . import caps
from . import syscalls as sc
from .fdpass import recv_fds, send_fds
from .hostview import mount_host_view
from .users import ExecUser, UserError, resolve_in_root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    R = TypeVar("R")

# The namespaces every container gets (a new network namespace too unless it joins one or
# uses the host's).
CONTAINER_FLAGS = sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC

MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
           ("urandom", 1, 9), ("tty", 5, 0))


class StepError(Exception):
    """A setup step failed; carries the exit code the container reports."""

    def __init__(self, message: str, exit_code: int = 125, err: int = 0) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.errno = err


class Workload:
    """The process to exec: argv, env, cwd, user, capabilities, terminal."""

    __slots__ = ("argv", "env", "cwd", "user", "tty", "cap_keep", "cap_drop", "create_cwd",
                 "resolved", "console_fd", "winsize")

    def __init__(self, *, argv: list[str], env: list[str], cwd: str, user: str, tty: bool,
                 cap_keep: int, cap_drop: list[int], create_cwd: bool = True,
                 resolved: ExecUser | None = None, console_fd: int = -1,
                 winsize: bytes = b"") -> None:
        self.argv, self.env, self.cwd, self.user, self.tty = argv, env, cwd, user, tty
        self.cap_keep = cap_keep          # capability mask for root (effective = permitted)
        self.cap_drop = cap_drop          # capabilities to drop from the bounding set
        self.create_cwd = create_cwd
        self.resolved = resolved          # the user, resolved before the clone (launch.py)
        self.console_fd = console_fd      # with tty: socket to send the pty master back on
        self.winsize = winsize            # with tty: struct winsize for the new terminal

    def to_wire(self) -> tuple:  # type: ignore[type-arg]
        return (self.argv, self.env, self.cwd, self.user, self.tty, self.cap_keep,
                self.cap_drop, self.create_cwd,
                None if self.resolved is None else self.resolved.as_tuple(),
                self.console_fd, self.winsize)

    @classmethod
    def from_wire(cls, t: tuple) -> Workload:  # type: ignore[type-arg]
        return cls(argv=t[0], env=t[1], cwd=t[2], user=t[3], tty=t[4], cap_keep=t[5],
                   cap_drop=t[6], create_cwd=t[7],
                   resolved=None if t[8] is None else ExecUser(*t[8]),
                   console_fd=t[9], winsize=t[10])


class Plan:
    """Everything the child needs, computed by the parent before clone; a zygote receives
    it as ``to_wire()`` bytes (marshal: bytes, ints and tuples only)."""

    __slots__ = ("layers_dir", "overlay_options", "rootfs", "hostname", "etc_files",
                 "mounts", "new_net", "init", "stdio", "cgroup_fds", "errfd", "workload",
                 "stage", "host_view", "netns_fd")

    def __init__(self, *, layers_dir: bytes, overlay_options: bytes, rootfs: bytes,
                 hostname: bytes, etc_files: list[tuple[bytes, bytes]],
                 mounts: list[tuple[str, bytes, bytes, int, bytes | None]], new_net: bool,
                 init: bool, stdio: tuple[int, int, int], cgroup_fds: list[int], errfd: int,
                 workload: Workload, stage: bytes = b"",
                 host_view: tuple[bytes, bool] | None = None, netns_fd: int = -1) -> None:
        self.layers_dir, self.overlay_options, self.rootfs = layers_dir, overlay_options, rootfs
        self.hostname = hostname
        self.etc_files = etc_files        # (host file, path in rootfs)
        self.mounts = mounts              # kind, src, target, flags, data
        self.new_net, self.init = new_net, init
        self.stdio, self.cgroup_fds, self.errfd = stdio, cgroup_fds, errfd
        self.workload = workload
        self.stage = stage                # where prepare() stages /proc, /sys, /dev
        self.host_view = host_view        # hostview.plan_host_view: pydock:host images
        self.netns_fd = netns_fd          # a network namespace to join (bridge), else -1

    def to_wire(self) -> bytes:
        return marshal.dumps((
            self.layers_dir, self.overlay_options, self.rootfs, self.hostname,
            tuple(self.etc_files), tuple(self.mounts), self.new_net, self.init,
            tuple(self.stdio), tuple(self.cgroup_fds), self.errfd, self.workload.to_wire(),
            self.stage, self.host_view, self.netns_fd))

    @classmethod
    def from_wire(cls, data: bytes) -> Plan:
        t = marshal.loads(data)
        return cls(layers_dir=t[0], overlay_options=t[1], rootfs=t[2], hostname=t[3],
                   etc_files=list(t[4]), mounts=list(t[5]), new_net=t[6], init=t[7],
                   stdio=t[8], cgroup_fds=list(t[9]), errfd=t[10],
                   workload=Workload.from_wire(t[11]), stage=t[12], host_view=t[13],
                   netns_fd=t[14])


def report(errfd: int, step: str, exc: BaseException) -> None:
    if isinstance(exc, StepError):
        doc = {"step": step, "message": str(exc), "exit_code": exc.exit_code,
               "errno": exc.errno}
    elif isinstance(exc, OSError):
        doc = {"step": step, "message": exc.strerror or str(exc), "errno": exc.errno or 0,
               "exit_code": 125, "filename": str(exc.filename or "")}
    else:
        doc = {"step": step, "message": f"{type(exc).__name__}: {exc}", "errno": 0,
               "exit_code": 125}
    try:
        os.write(errfd, marshal.dumps(doc))
    except OSError:
        pass


def run_steps(steps: list[tuple[str, Callable[[], None]]], errfd: int) -> None:
    """Run steps in order; on failure report the step and exit the process."""
    for name, step in steps:
        try:
            step()
        except BaseException as exc:  # noqa: BLE001 - everything must be reported, then exit
            report(errfd, name, exc)
            os._exit(exc.exit_code if isinstance(exc, StepError) else 125)


# -- container PID 1 ---------------------------------------------------------------------

def prepare(stage: bytes, new_net: bool, join_net: bool = False
            ) -> tuple[str, BaseException] | None:
    """The part of a container's setup that needs no plan, done ahead of time by a zygote.

    In the new mount namespace, a tmpfs at ``stage`` receives /proc (with Docker's masked
    and read-only paths), a read-only /sys and a minimal /dev; the plan phase moves them
    into the root filesystem with MS_MOVE.  ``join_net``: the container will join a
    network namespace it is handed, and sysfs (which shows the mounter's namespace) is
    mounted after that.  The capabilities outside Docker's default set leave the bounding
    set here too (the process keeps them until its workload's exec).  Returns the failed
    step, if any.
    """
    def private() -> None:
        sc.mount(None, b"/", None, sc.MS_REC | sc.MS_PRIVATE)
        sc.mount(b"stage", stage, b"tmpfs", 0, b"mode=700,size=64k")
        for d in (b"/proc", b"/sys", b"/dev"):
            os.mkdir(stage + d, 0o755)

    def proc() -> None:
        p = stage + b"/proc"
        sc.mount(b"proc", p, b"proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
        for path in MASKED_PATHS:
            if not path.startswith("/proc/"):
                continue
            target = stage + path.encode()
            try:
                if os.path.isdir(target):
                    sc.mount(b"tmpfs", target, b"tmpfs", sc.MS_RDONLY)
                else:
                    sc.mount(b"/dev/null", target, None, sc.MS_BIND)
            except FileNotFoundError:
                pass
        for path in READONLY_PATHS:
            target = stage + path.encode()
            try:
                sc.mount(target, target, None, sc.MS_BIND | sc.MS_REC)
                sc.mount(target, target, None,
                         sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC)
            except FileNotFoundError:
                pass

    def sys_() -> None:
        if not join_net:
            mount_sys(stage)

    def dev() -> None:
        # Every mount of the container is nodev; the few devices it may use are bind mounts
        # of the host's nodes.  So a root process that mknods a device (CAP_MKNOD is in
        # Docker's default set) cannot open it: the part of Docker's device cgroup that
        # matters, on v1 and v2 hosts alike, with no cgroup migration.
        d = stage + b"/dev"
        sc.mount(b"tmpfs", d, b"tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_STRICTATIME,
                 b"mode=755,size=65536k")
        os.umask(0)
        for name, _major, _minor in DEVICES:
            node = d + b"/" + name.encode()
            os.close(os.open(node, os.O_CREAT | os.O_WRONLY, 0o666))
            sc.mount(b"/dev/" + name.encode(), node, None, sc.MS_BIND)
        os.mkdir(d + b"/pts", 0o755)
        sc.mount(b"devpts", d + b"/pts", b"devpts", sc.MS_NOSUID | sc.MS_NOEXEC,
                 b"newinstance,ptmxmode=0666,mode=0620,gid=5")
        os.symlink(b"pts/ptmx", d + b"/ptmx")
        os.mkdir(d + b"/shm", 0o1777)
        sc.mount(b"shm", d + b"/shm", b"tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
                 b"mode=1777,size=65536k")
        os.mkdir(d + b"/mqueue", 0o755)
        for link, target in ((b"fd", b"/proc/self/fd"), (b"stdin", b"/proc/self/fd/0"),
                             (b"stdout", b"/proc/self/fd/1"), (b"stderr", b"/proc/self/fd/2"),
                             (b"core", b"/proc/kcore")):
            os.symlink(target, d + b"/" + link)

    def loopback() -> None:
        if new_net and not join_net:
            _loopback_up()

    def bounding() -> None:
        for cap in caps.default_sets()[1]:
            try:
                sc.prctl(sc.PR_CAPBSET_DROP, cap)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise

    steps = [("set parent death signal", lambda: sc.prctl(sc.PR_SET_PDEATHSIG, _signal.SIGKILL)),
             ("make mounts private", private), ("mount /proc", proc), ("mount /sys", sys_),
             ("mount /dev", dev), ("bring up loopback", loopback),
             ("drop capabilities from the bounding set", bounding)]
    for name, step in steps:
        try:
            step()
        except BaseException as exc:  # noqa: BLE001 - reported once the plan's pipe is here
            return name, exc
    return None


def mount_sys(stage: bytes) -> None:
    """A read-only sysfs (of the current network namespace) at stage/sys, masked paths."""
    p = stage + b"/sys"
    sc.mount(b"sysfs", p, b"sysfs", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    for path in MASKED_PATHS:
        if path.startswith("/sys/") and os.path.isdir(stage + path.encode()):
            sc.mount(b"tmpfs", stage + path.encode(), b"tmpfs", sc.MS_RDONLY)


def zygote_main(sock_fd: int, stage: bytes, new_net: bool, join_net: bool = False) -> None:
    """A pre-cloned PID 1: prepare, wait for a plan (marshal data, fds by SCM_RIGHTS), run it."""
    try:
        _signal.set_wakeup_fd(-1)
        gc.disable()
        sc.set_process_name(b"pydock-zygote")
        failed = prepare(stage, new_net, join_net)
        # Work a start would otherwise wait for, done while nobody waits:
        _install_forwarding()  # ~0.3 ms for the ~30 handlers of the init
        _warm_up()
        sock = _socket.socket(fileno=sock_fd)
        try:
            data, fds = recv_fds(sock, 1 << 20, 64)
        except OSError:
            data = b""
        if not data:
            os._exit(0)
        plan = Plan.from_wire(data)
        n = len(plan.cgroup_fds)
        plan.stdio = (fds[0], fds[1], fds[2])
        plan.cgroup_fds = fds[3:3 + n]
        plan.errfd = fds[3 + n]
        os.set_inheritable(plan.errfd, False)
        if plan.workload.console_fd >= 0:
            plan.workload.console_fd = fds[4 + n]
        if plan.netns_fd >= 0:
            plan.netns_fd = fds[-1]
        sock.close()
    except BaseException:  # noqa: BLE001 - a zygote never returns into the monitor's code
        os._exit(125)
    if failed is not None:
        report(plan.errfd, *failed)
        os._exit(125)
    container_main(plan, prepared=True)


def _warm_up() -> None:
    """Decode a plan once: the copy-on-write faults of the first decoding are taken
    before the plan comes."""
    workload = Workload(argv=["true"], env=["PATH=/bin"], cwd="/", user="", tty=False,
                        cap_keep=0, cap_drop=[0], resolved=ExecUser(0, 0, (0,), "/"))
    Plan.from_wire(Plan(
        layers_dir=b"/", overlay_options=b"", rootfs=b"/", hostname=b"", etc_files=[],
        mounts=[], new_net=False, init=True, stdio=(0, 1, 2), cgroup_fds=[], errfd=-1,
        workload=workload).to_wire())


def container_main(plan: Plan, *, prepared: bool = False) -> None:
    """Body of the cloned child; never returns."""
    try:
        if not prepared:
            _signal.set_wakeup_fd(-1)
            failed = prepare(plan.stage, plan.new_net, plan.netns_fd >= 0)
            if failed is not None:
                report(plan.errfd, *failed)
                os._exit(125)
        _container_main(plan)
    finally:
        os._exit(125)


def _container_main(plan: Plan) -> None:
    root = plan.rootfs
    stage = plan.stage

    def stdio() -> None:
        for target, fd in enumerate(plan.stdio):
            if fd != target:
                os.dup2(fd, target)
        for fd in set(plan.stdio):
            if fd > 2:
                _close(fd)
        os.umask(0)

    def cgroups() -> None:
        for fd in plan.cgroup_fds:
            os.write(fd, b"0")
            os.close(fd)

    def join_network() -> None:
        if plan.netns_fd >= 0:
            sc.setns(plan.netns_fd, sc.CLONE_NEWNET)
            os.close(plan.netns_fd)
            mount_sys(stage)

    def host_view() -> None:
        if plan.host_view is not None:
            mount_host_view(*plan.host_view)

    def overlay() -> None:
        os.chdir(plan.layers_dir)
        try:
            sc.mount(b"overlay", root, b"overlay", sc.MS_NODEV, plan.overlay_options)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise StepError(
                    "Invalid argument (is the store on overlayfs, e.g. inside Docker? "
                    "point PYDOCK_STORE at a volume or tmpfs)", err=exc.errno) from None
            raise

    def move_prepared() -> None:
        for d in (b"/proc", b"/sys", b"/dev"):
            sc.mount(stage + d, root + d, None, sc.MS_MOVE)

    def etc_files() -> None:
        for src, target in plan.etc_files:
            sc.mount(src, root + target, None, sc.MS_BIND)

    def mounts() -> None:
        for kind, src, target, flags, data in plan.mounts:
            path = _mkdirs_in_root(root, target, src if kind == "bind" else None)
            if kind == "bind":
                sc.mount(src, path, None, sc.MS_BIND)
                # nodev (see dev()), keeping the flags the source mount has: a remount of
                # a bind mount sets all of them.
                sc.mount(None, path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_NODEV |
                         _mount_flags(path) | (flags & sc.MS_RDONLY))
            else:
                sc.mount(b"tmpfs", path, b"tmpfs", flags, data)

    def hostname() -> None:
        sc.sethostname(plan.hostname)

    def pivot() -> None:
        os.chdir(root)
        sc.pivot_root(b".", b".")
        sc.umount2(b".", sc.MNT_DETACH)
        os.chdir(b"/")

    run_steps([
        ("set up stdio", stdio),
        ("join cgroup", cgroups),
        ("join the network namespace", join_network),
        ("mount the host view", host_view),
        ("mount overlay", overlay),
        ("move /proc, /sys, /dev into the root", move_prepared),
        ("bind /etc/hosts, /etc/hostname, /etc/resolv.conf", etc_files),
        ("mount volumes", mounts),
        ("set hostname", hostname),
        ("pivot_root", pivot),
    ], plan.errfd)

    if plan.init:
        run_init(plan)
    exec_workload(plan.workload, plan.errfd)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _mount_flags(path: bytes) -> int:
    """The nosuid/noexec/rdonly/... flags of the mount holding ``path`` (statvfs)."""
    f = os.statvfs(path).f_flag
    out = 0
    for st, ms in ((os.ST_RDONLY, sc.MS_RDONLY), (os.ST_NOSUID, sc.MS_NOSUID),
                   (os.ST_NODEV, sc.MS_NODEV), (os.ST_NOEXEC, sc.MS_NOEXEC),
                   (getattr(os, "ST_NOATIME", 1024), 1024),
                   (getattr(os, "ST_NODIRATIME", 2048), 2048),
                   (getattr(os, "ST_RELATIME", 4096), 1 << 21)):
        if f & st:
            out |= ms
    return out


def _mkdirs_in_root(root: bytes, target: bytes, bind_src: bytes | None) -> bytes:
    """Resolve ``target`` inside ``root`` as the container would see it, following
    symlinks within the container (``/var/run -> /run``: absolute links start again at its
    root, ``..`` stops at it: nothing resolves outside), creating what is missing."""
    pending = [p for p in target.split(b"/") if p and p != b"."]
    done: list[bytes] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == b"..":
            if done:
                done.pop()
            continue
        path = root + b"/" + b"/".join([*done, part])
        if os.path.islink(path):
            hops += 1
            if hops > 40:
                raise StepError(f"mount target {target.decode()}: too many levels of symlinks")
            link = os.readlink(path)
            if link.startswith(b"/"):
                done = []
            pending = [p for p in link.split(b"/") if p and p != b"."] + pending
            continue
        if not os.path.exists(path):
            if not pending and bind_src is not None and not os.path.isdir(bind_src):
                with open(path, "wb"):
                    pass
            else:
                os.mkdir(path, 0o755)
        done.append(part)
    return root + b"/" + b"/".join(done)


def _loopback_up() -> None:
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, ifreq))[1]  # SIOCGIFFLAGS
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))     # SIOCSIFFLAGS
    finally:
        s.close()


# -- the init (PID 1 for --init): forwards signals, reaps zombies ---------------------------

# The named signals (signal.Signals, read from _signal: see the module docstring).
FORWARDED = sorted({getattr(_signal, name) for name in dir(_signal)
                    if name.startswith("SIG") and not name.startswith("SIG_")} -
                   {_signal.SIGKILL, _signal.SIGSTOP, _signal.SIGCHLD})


INHERITED_IGNORES = (_signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGINT, _signal.SIGTERM,
                     _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1, _signal.SIGUSR2)


def run_init(plan: Plan) -> None:
    """Start the workload, forward signals to it, reap orphans, exit with its status.

    The init takes on the workload's user, capabilities and no_new_privs, as Docker's
    tini does, and hides the monitor's command line (the container can read it).  It
    spawns the workload (vfork and exec: no copy of this process's memory, ~1.5 ms less
    than a fork here), which inherits that identity; a terminal workload, which needs its
    controlling terminal set up between fork and exec, is forked.
    """
    w = plan.workload
    # first: the workload may read /proc/1/cmdline and /proc/1/environ at once
    sc.set_process_name(b"pydock-init")
    _scrub_args_and_env(b"pydock-init")
    if w.tty:
        pid = os.fork()
        if pid == 0:
            return  # the caller execs the workload in this child
        try:
            _become(w, terminal=False)
        except BaseException as exc:  # noqa: BLE001 - the init must not outlive a failed setup
            report(plan.errfd, "init: set user and capabilities", exc)
            os.kill(pid, _signal.SIGKILL)
            os._exit(125)
    else:
        try:
            env = _become(w, terminal=False)
            _close_stray_fds(plan.errfd)
            pid = _find_and_run(w.argv, env, _spawn)
        except StepError as exc:
            report(plan.errfd, "exec" if exc.exit_code in (126, 127) else "set up the process",
                   exc)
            os._exit(exc.exit_code)
        except BaseException as exc:  # noqa: BLE001 - reported, never a silent 125
            report(plan.errfd, "exec", StepError(f'exec: "{w.argv[0]}": {exc}', 126))
            os._exit(126)
    _forward_signals(pid)
    _close(plan.errfd)
    _init_loop(pid)


def _scrub_args_and_env(title: bytes) -> None:
    """Overwrite this process's argv and environment memory in place: what the container
    reads in /proc/1/cmdline and /proc/1/environ (the monitor's or the factory's, with the
    store's path and the host's environment, which may hold secrets) becomes ``title`` and
    nothing.  Python copied its environment at start; the workload gets its own."""
    import ctypes
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        # arg_start, arg_end, env_start, env_end: fields 48-51 of proc(5), from state (3)
        arg_start, arg_end, env_start, env_end = (int(x) for x in fields[45:49])
    except (OSError, IndexError, ValueError):
        return
    size = arg_end - arg_start
    if size > len(title):
        ctypes.memset(arg_start, 0, size)
        ctypes.memmove(arg_start, title, len(title))
    if env_end > env_start:
        ctypes.memset(env_start, 0, env_end - env_start)


_forward_to = [0]  # the pid the init passes signals on to (0: none yet, they are dropped)


def _forward(signum: int, _frame: object) -> None:
    if _forward_to[0]:
        try:
            os.kill(_forward_to[0], signum)
        except ProcessLookupError:
            pass


def _install_forwarding() -> None:
    for s in FORWARDED:
        try:
            _signal.signal(s, _forward)
        except (OSError, ValueError):
            pass


def _forward_signals(pid: int) -> None:
    """Pass every catchable signal on to ``pid``.  Installed before the start is reported:
    a PID 1 without a handler never sees the signals of a ``stop`` that follows at once.
    (A zygote installs the handlers while it waits; exec resets them for a workload.)"""
    _forward_to[0] = pid
    if _signal.getsignal(_signal.SIGTERM) is not _forward:
        _install_forwarding()


def _init_loop(pid: int) -> None:
    """Reap every child; exit with the status of ``pid``."""
    status = 0
    while True:
        try:
            reaped, raw = os.wait()
        except ChildProcessError:
            break
        if reaped == pid:
            status = os.waitstatus_to_exitcode(raw)
            status = 128 - status if status < 0 else status
            break
    os._exit(status)


# -- the workload: user, capabilities, exec ------------------------------------------------

def _become(w: Workload, *, terminal: bool) -> list[str]:
    """Take the workload's user, groups, capabilities and no_new_privs; returns its env."""
    env = list(w.env)
    holder: dict[str, object] = {}

    def user() -> None:
        try:
            holder["user"] = w.resolved or resolve_in_root(w.user)
        except UserError as exc:
            raise StepError(str(exc), 125) from None
        if not any(e.startswith("HOME=") for e in env):
            env.append(f"HOME={holder['user'].home}")  # type: ignore[attr-defined]

    def cwd() -> None:
        try:
            os.chdir(w.cwd)
        except FileNotFoundError:
            if not w.create_cwd:
                raise StepError(f"chdir to cwd ({w.cwd!r}) set in config.json failed: "
                                "no such file or directory", 126) from None
            path = ""
            for part in w.cwd.strip("/").split("/"):  # every missing level 0755, as Docker
                path += "/" + part
                try:
                    os.mkdir(path, 0o755)
                except FileExistsError:
                    pass
            os.chdir(w.cwd)

    def set_terminal() -> None:
        os.setsid()
        if w.tty:
            if w.console_fd >= 0:
                _open_console(w)
            fcntl.ioctl(0, sc.TIOCSCTTY, 0)

    def identity() -> None:
        u = holder["user"]
        for cap in w.cap_drop:
            try:
                sc.prctl(sc.PR_CAPBSET_DROP, cap)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
        os.setgroups(list(u.groups))  # type: ignore[attr-defined]
        os.setgid(u.gid)  # type: ignore[attr-defined]
        os.setuid(u.uid)  # type: ignore[attr-defined]
        if u.uid == 0:  # type: ignore[attr-defined]
            sc.capset(w.cap_keep, w.cap_keep, 0)
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
        os.umask(0o022)

    def step(name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except StepError:
            raise
        except OSError as exc:
            raise StepError(f"{name}: {exc.strerror or exc}", 125, exc.errno or 0) from None
        except Exception as exc:  # noqa: BLE001 - e.g. an absurd uid: OverflowError
            raise StepError(f"{name}: {exc}", 125) from None

    step("resolve user", user)
    step("change to working directory", cwd)
    if terminal:
        step("set up terminal", set_terminal)
    step("set user and capabilities", identity)
    return env


def exec_workload(w: Workload, errfd: int) -> None:
    """Become the container's process (after pivot_root); never returns."""
    try:
        env = _become(w, terminal=True)
    except StepError as exc:
        report(errfd, "exec" if exc.exit_code in (126, 127) else "set up the process", exc)
        os._exit(exc.exit_code)
    _close_stray_fds(errfd)
    # Handlers are reset by exec; ignored signals are not (Python ignores SIGPIPE and SIGXFSZ,
    # the monitor SIGINT and SIGTERM): give the workload default dispositions.
    for s in INHERITED_IGNORES:
        _signal.signal(s, _signal.SIG_DFL)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
    try:
        _find_and_run(w.argv, env, os.execve)
    except StepError as exc:
        report(errfd, "exec", exc)
        os._exit(exc.exit_code)
    except BaseException as exc:  # noqa: BLE001 - reported, never a silent 125
        report(errfd, "exec", StepError(f'exec: "{w.argv[0]}": {exc}', 126))
        os._exit(126)
    os._exit(127)


def _close_stray_fds(errfd: int) -> None:
    """Only stdio (and the close-on-exec start pipe) goes on to the workload: no fd the
    monitor or a zygote held reaches a container's processes, even one left inheritable."""
    os.closerange(3, errfd)
    os.closerange(errfd + 1, 1 << 20)


def _open_console(w: Workload) -> None:
    """Make a pty in the container's own devpts, send its master back, use the slave as
    stdio (runc's console socket): ttyname() and job control then work inside."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, sc.TIOCSPTLCK, struct.pack("i", 0))
    number = struct.unpack("I", fcntl.ioctl(master, sc.TIOCGPTN, b"\0" * 4))[0]
    slave = os.open(f"/dev/pts/{number}", os.O_RDWR | os.O_NOCTTY)
    if w.winsize:
        fcntl.ioctl(slave, sc.TIOCSWINSZ, w.winsize)
    sock = _socket.socket(fileno=w.console_fd)
    send_fds(sock, b"console", [master])
    sock.detach()
    os.close(w.console_fd)
    os.close(master)
    for target in (0, 1, 2):
        os.dup2(slave, target)
    os.close(slave)


def _spawn(path: str, argv: list[str], env: dict[bytes, bytes]) -> int:
    """posix_spawn the workload: a new session, default signal dispositions, no mask."""
    return os.posix_spawn(path, argv, env, setsid=True, setsigdef=INHERITED_IGNORES,
                          setsigmask=())


def _find_and_run(argv: list[str], env: list[str],
                  run: Callable[[str, list[str], dict[bytes, bytes]], R]) -> R:
    """``run`` (execve or _spawn) the program ``argv[0]`` found as execvpe finds it, with
    the PATH of ``env``; a failure raises StepError with Docker's message and exit code."""
    envd = dict(e.partition("=")[::2] for e in env)
    prog = argv[0]
    if "/" in prog:
        candidates = [prog]
    else:
        candidates = [os.path.join(d or ".", prog) for d in
                      envd.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                                       "/sbin:/bin").split(":")]
    env_bytes = {os.fsencode(k): os.fsencode(v) for k, v in envd.items()}
    last: OSError | None = None
    for path in candidates:
        if len(candidates) > 1 and not os.path.exists(path):
            # skipped, not tried: a failed try of _spawn costs a whole vfork (~1 ms)
            last = last or FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
            continue
        try:
            return run(path, argv, env_bytes)
        except OSError as exc:
            if last is None or exc.errno != errno.ENOENT:
                last = exc
    assert last is not None
    if "/" not in prog and last.errno == errno.ENOENT:
        raise StepError(f'exec: "{prog}": executable file not found in $PATH', 127)
    if last.errno == errno.ENOENT:
        raise StepError(f'exec: "{prog}": stat {prog}: no such file or directory', 127)
    if last.errno in (errno.EACCES, errno.EPERM):
        raise StepError(f'exec: "{prog}": permission denied', 126)
    if last.errno == errno.ENOEXEC:
        raise StepError(f'exec: "{prog}": exec format error', 126)
    raise StepError(f'exec: "{prog}": {last.strerror}', 126)


def exec_main(ns_fds: list[int], cgroup_fds: list[int], stdio: tuple[int, int, int],
              workload: Workload, errfd: int) -> None:
    """Body of the cloned child of an exec (already in the container's PID namespace):
    join its other namespaces, exec; never returns."""
    try:
        def enter() -> None:
            _signal.set_wakeup_fd(-1)
            for target, fd in enumerate(stdio):
                if fd != target:
                    os.dup2(fd, target)
            for fd in set(stdio):
                if fd > 2:
                    _close(fd)
            for fd in cgroup_fds:
                os.write(fd, b"0")
                os.close(fd)
            for fd in ns_fds:
                sc.setns(fd)
                os.close(fd)

        run_steps([("enter container namespaces", enter)], errfd)
        sc.prctl(sc.PR_SET_PDEATHSIG, _signal.SIGKILL)
        exec_workload(workload, errfd)
    finally:
        os._exit(126)
