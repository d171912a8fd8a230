"""Image + run options -> a validated ContainerSpec, applying Docker's rules (pure functions)."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .errors import UsageError
from .models import ContainerSpec, Image, Mount, PortSpec

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NETWORKS = ("bridge", "none", "host")   # builtin; any other valid name is a user network
_NETWORK_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
_NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_UNSET = object()


@dataclass(frozen=True)
class RunOptions:
    """Run options as a user gives them (CLI flags or keyword arguments)."""

    command: Sequence[str] | None = None
    entrypoint: Sequence[str] | str | None | object = _UNSET
    env: Sequence[str] = ()
    working_dir: str | None = None
    user: str | None = None
    hostname: str | None = None
    name: str | None = None
    labels: Mapping[str, str] | None = None
    mounts: Sequence[Mount] = ()
    network: str = "bridge"
    network_aliases: Sequence[str] = ()
    extra_hosts: Sequence[str] = ()          # "HOST:IP", IP may be host-gateway
    ports: Sequence[str | int | PortSpec] = ()  # -p: "8080:80", "127.0.0.1::53/udp", 80
    publish_all: bool = False                # -P: every port the image EXPOSEs
    init: bool = False
    tty: bool = False
    stdin_open: bool = False
    auto_remove: bool = False
    memory: int | None = None
    pids_limit: int | None = None
    cpus: float | None = None
    stop_signal: str | None = None
    stop_timeout: float | None = None


def merge_env(base: Sequence[str], overrides: Sequence[str]) -> tuple[str, ...]:
    """Docker's ReplaceOrAppendEnvValues: later ``K=V`` replace earlier ones in place."""
    out: list[str] = list(base)
    index = {item.partition("=")[0]: i for i, item in enumerate(out)}
    for item in overrides:
        key = item.partition("=")[0]
        if key in index:
            out[index[key]] = item
        else:
            index[key] = len(out)
            out.append(item)
    return tuple(out)


def resolve_argv(image: Image, opts: RunOptions) -> tuple[
        tuple[str, ...], tuple[str, ...] | None, tuple[str, ...] | None]:
    """Entrypoint + Cmd as Docker combines them; returns (argv, cmd, entrypoint)."""
    entrypoint: tuple[str, ...] | None
    cmd: tuple[str, ...] | None
    if opts.entrypoint is _UNSET:
        entrypoint = image.config.entrypoint
        cmd = tuple(opts.command) if opts.command else image.config.cmd
    else:
        # --entrypoint replaces the image's and drops the image's CMD (docker run).
        ep = opts.entrypoint
        if ep is None or ep == "" or ep == []:
            entrypoint = None
        elif isinstance(ep, str):
            entrypoint = (ep,)
        else:
            entrypoint = tuple(ep)  # type: ignore[arg-type]
        cmd = tuple(opts.command) if opts.command else None
    argv = (entrypoint or ()) + (cmd or ())
    return argv, cmd, entrypoint


def make_spec(image: Image, opts: RunOptions, *, container_id: str) -> ContainerSpec:
    """Combine an image's config with run options; raise UsageError on invalid values."""
    argv, cmd, entrypoint = resolve_argv(image, opts)
    hostname = opts.hostname or container_id[:12]
    if opts.network == "host" and not opts.hostname:
        hostname = os.uname().nodename  # docker: the host's name on the host network
    env = merge_env(
        (f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}", *(("TERM=xterm",) if opts.tty else ())),
        merge_env(image.config.env, opts.env),
    )
    stop = opts.stop_signal or image.config.stop_signal or "SIGTERM"
    # Docker's "no limit" spellings: -m 0, --cpus 0, --pids-limit 0 or -1.
    memory = opts.memory or None
    cpus = opts.cpus or None
    pids = opts.pids_limit if opts.pids_limit and opts.pids_limit > 0 else None

    spec = ContainerSpec(
        image_id=image.id,
        image_name=image.tags[0] if image.tags else image.id,
        argv=argv,
        env=env,
        working_dir=opts.working_dir or image.config.working_dir or "/",
        user=opts.user if opts.user is not None else image.config.user,
        hostname=hostname,
        name=(opts.name or "").lstrip("/"),
        labels=tuple(sorted({**image.config.labels_dict, **(opts.labels or {})}.items())),
        mounts=tuple(opts.mounts),
        network="bridge" if opts.network == "default" else opts.network,
        network_aliases=tuple(opts.network_aliases),
        extra_hosts=tuple(parse_add_host(h) for h in opts.extra_hosts),
        ports=_ports(image, opts),
        init=opts.init,
        tty=opts.tty,
        stdin_open=opts.stdin_open,
        auto_remove=opts.auto_remove,
        memory=memory,
        pids_limit=pids,
        cpus=cpus,
        stop_signal=stop,
        stop_timeout=10.0 if opts.stop_timeout is None else opts.stop_timeout,
        cmd=cmd,
        entrypoint=entrypoint,
    )
    validate(spec, given_name=opts.name)
    return spec


def _ports(image: Image, opts: RunOptions) -> tuple[PortSpec, ...]:
    """Published ports (pydock/ports.py); Docker discards them on the host network (the
    CLI warns), and refuses them with ``--network none`` (nothing to forward to)."""
    from .ports import resolve_ports
    specs = resolve_ports(opts.ports, publish_all_exposed=opts.publish_all,
                          exposed=image.config.exposed_ports)
    if not specs or opts.network == "host":
        return ()
    if opts.network == "none":
        raise UsageError(f"cannot publish ports ({', '.join(s.key for s in specs)}) of a "
                         "container on network none: it has no address to forward to (use "
                         "a bridge network)")
    return specs


# -- validation: a list of small named checks (runc's configs/validate) --------------------

def _check_command(spec: ContainerSpec) -> str | None:
    if not spec.argv:
        return (f"no command specified: give one after the image name (image "
                f"{spec.image_name} has no CMD or ENTRYPOINT, or --entrypoint cleared them)")
    return None


def _check_workdir(spec: ContainerSpec) -> str | None:
    if not spec.working_dir.startswith("/"):
        return (f"the working directory {spec.working_dir!r} is invalid, "
                "it needs to be an absolute path")
    return None


def _check_name(spec: ContainerSpec) -> str | None:
    if spec.name and not _NAME_RE.match(spec.name):
        return (f"invalid container name {spec.name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                "are allowed")
    if len(spec.name) > 200:
        return f"invalid container name: {len(spec.name)} characters, at most 200"
    return None


def _check_user(spec: ContainerSpec) -> str | None:
    for part in spec.user.split(":"):
        if part.isdigit() and int(part) > 2**32 - 2:
            return f"invalid user {spec.user!r}: ids go up to {2**32 - 2}"
    return None


def _check_network(spec: ContainerSpec) -> str | None:
    if spec.network.startswith("container:"):
        return (f"unknown network {spec.network!r}: the native engine does not share network "
                "namespaces between containers (use a user network)")
    if not _NETWORK_RE.match(spec.network):
        return f"unknown network {spec.network!r}: not a valid network name"
    if spec.network_aliases and spec.network in NETWORKS:
        return ("network-scoped aliases are supported only for containers in user defined "
                "networks")
    for alias in spec.network_aliases:
        if not _NETWORK_RE.match(alias):
            return f"invalid network alias {alias!r}"
    return None


RESERVED_TARGETS = ("/proc", "/sys", "/dev")


def _check_mounts(spec: ContainerSpec) -> str | None:
    seen = set()
    for m in spec.mounts:
        if not m.target.startswith("/") or m.target == "/":
            return f"invalid mount target {m.target!r}: must be an absolute path other than /"
        target = os.path.normpath(m.target)
        if target in RESERVED_TARGETS:
            return f"invalid mount target {m.target!r}: {target} is the container's own"
        if target in seen:
            return f"duplicate mount point: {target}"
        seen.add(target)
        if m.kind == "bind":
            if not os.path.isabs(m.source):
                return f"invalid bind mount source {m.source!r}: must be an absolute host path"
            if not os.path.exists(m.source):
                return f"bind mount source path does not exist: {m.source}"
    return None


def _check_limits(spec: ContainerSpec) -> str | None:
    if spec.memory is not None and spec.memory < 6 * 1024 * 1024:
        return "minimum memory limit allowed is 6MB"
    if spec.memory is not None and spec.memory > 2**62:
        return f"memory limit {spec.memory} is too large"
    if spec.cpus is not None and not 0.01 <= spec.cpus <= (os.cpu_count() or 1):
        return (f"range of CPUs is from 0.01 to {os.cpu_count()}.00, "
                f"as there are only {os.cpu_count()} CPUs available")
    return None


def _check_stop_signal(spec: ContainerSpec) -> str | None:
    try:
        parse_signal(spec.stop_signal)
    except UsageError as exc:
        return str(exc)
    return None


CHECKS: tuple[Callable[[ContainerSpec], str | None], ...] = (
    _check_command, _check_workdir, _check_name, _check_user, _check_network, _check_mounts,
    _check_limits, _check_stop_signal,
)


def validate(spec: ContainerSpec, *, given_name: str | None = None) -> None:
    """Run every check; raise UsageError with all problems found."""
    problems = [p for p in (check(spec) for check in CHECKS) if p]
    if problems:
        raise UsageError("; ".join(problems))


# -- parsing of user-facing option values (shared by the CLI and the Python API) -------------

_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str, *, what: str = "size") -> int:
    """``512m``, ``1g``, ``1048576`` -> bytes (Docker's RAMInBytes)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)i?b?\s*", text.lower())
    if not m:
        raise UsageError(f"invalid {what} {text!r}: use a number with an optional unit "
                         "b, k, m or g (e.g. 256m)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def parse_signal(text: str | int) -> int:
    """``SIGTERM``, ``TERM``, ``15`` -> 15."""
    if isinstance(text, int):
        return parse_signal(str(text))
    t = text.strip().upper()
    if t.isdigit():
        if not 1 <= int(t) <= signal.SIGRTMAX:
            raise UsageError(f"invalid signal: {text!r} (1 to {int(signal.SIGRTMAX)})")
        return int(t)
    name = t if t.startswith("SIG") else f"SIG{t}"
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise UsageError(f"invalid signal: {text!r}") from None


def parse_volume(text: str) -> Mount:
    """``/host:/ctr[:ro|rw]`` -> a bind Mount (named volumes are not supported yet)."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise UsageError(f"invalid volume spec {text!r}: use /host/path:/container/path[:ro]")
    source, target = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) == 3 else []
    known = {"ro", "rw", "z", "Z", "private", "rprivate", "shared", "rshared", "slave",
             "rslave", "nocopy", "consistent", "cached", "delegated"}
    bad = [o for o in options if o not in known]
    if bad:
        raise UsageError(f"invalid volume option {bad[0]!r} in {text!r}: use ro or rw")
    mode = "ro" if "ro" in options else "rw"
    if not os.path.isabs(source):
        raise UsageError(f"invalid volume spec {text!r}: the source must be an absolute host "
                         "path (named volumes are not supported by the native engine yet)")
    return Mount(target=target, kind="bind", source=os.path.normpath(source),
                 readonly=mode == "ro")


def parse_tmpfs(text: str) -> Mount:
    """``/run[:size=64m,mode=1777]`` -> a tmpfs Mount (noexec,nosuid,nodev unless said)."""
    target, _, options = text.partition(":")
    for opt in filter(None, options.split(",")):
        key, _, value = opt.partition("=")
        if key == "size":
            parse_size(value, what="tmpfs size")
        elif key == "mode" and not re.fullmatch(r"[0-7]{3,4}", value):
            raise UsageError(f"invalid tmpfs mode {value!r} in {text!r}")
        elif key in ("uid", "gid", "nr_inodes") and not value.isdigit():
            raise UsageError(f"invalid tmpfs option {opt!r} in {text!r}: a number is needed")
        elif key not in ("size", "mode", "ro", "rw", "noexec", "exec", "nosuid", "suid",
                         "nodev", "dev", "uid", "gid", "nr_inodes"):
            raise UsageError(f"unknown tmpfs option {key!r} in {text!r}")
    return Mount(target=target, kind="tmpfs", options=options, readonly="ro" in
                 options.split(","))


def parse_env(items: Sequence[str], *, host_env: Mapping[str, str]) -> list[str]:
    """``-e K=V`` / ``-e K`` (taken from the host, dropped when unset) -> ``K=V`` list."""
    out = []
    for item in items:
        if "=" in item:
            if item.startswith("="):
                raise UsageError(f"invalid environment variable: {item!r}")
            out.append(item)
        elif item in host_env:
            out.append(f"{item}={host_env[item]}")
    return out


def read_env_file(path: str, *, host_env: Mapping[str, str]) -> list[str]:
    """Docker's ``--env-file``: KEY=VALUE lines, # comments, a bare KEY from the host."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read env file {path}: {exc.strerror}") from None
    items = []
    for number, line in enumerate(lines, 1):
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        key = line.partition("=")[0]
        if not key or " " in key.strip() or key != key.strip():
            raise UsageError(f"{path}:{number}: invalid variable name {key!r}")
        items.append(line)
    return parse_env(items, host_env=host_env)


def parse_add_host(text: str) -> tuple[str, str]:
    """``--add-host HOST:IP`` (or ``HOST=IP``; IP may be ``host-gateway``) -> (host, ip)."""
    import ipaddress
    host, sep, ip = text.partition("=") if "=" in text else text.partition(":")
    if not sep or not host or not ip:
        raise UsageError(f"invalid argument {text!r} for --add-host: use HOST:IP")
    if ip != "host-gateway":
        try:
            ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            raise UsageError(f"invalid IP address in --add-host {text!r}: {ip!r}") from None
    return host, ip.strip("[]")


def parse_cpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"invalid --cpus value {text!r}: use a number like 0.5") from None
    return value
