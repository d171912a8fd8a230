"""Run options and image configs translated into Docker Engine API arguments (pure functions)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from ...errors import UsageError
from ...models import ImageConfig, PortSpec
from ...spec import _UNSET, RunOptions, parse_add_host, parse_signal

# The RunOptions fields translated below; a new field nobody translated yet is refused
# (UsageError naming it) rather than silently ignored.
TRANSLATED = frozenset({
    "command", "entrypoint", "env", "working_dir", "user", "hostname", "name", "labels",
    "mounts", "network", "network_aliases", "extra_hosts", "init", "tty", "stdin_open",
    "auto_remove", "memory", "pids_limit", "cpus", "stop_signal", "stop_timeout",
    "ports", "publish_all",
})


@dataclass(frozen=True)
class CreateArgs:
    """Keyword arguments of ``APIClient.create_container`` and ``create_host_config``."""

    container: dict[str, Any]
    host: dict[str, Any]


def unsupported(opts: RunOptions) -> list[str]:
    """Names of options set to something other than their default that this backend does
    not translate."""
    default = RunOptions()
    return [f.name for f in fields(RunOptions) if f.name not in TRANSLATED
            and getattr(opts, f.name) != getattr(default, f.name)]


def create_args(opts: RunOptions, labels: dict[str, str], *,
                ports: Sequence[PortSpec] = ()) -> CreateArgs:
    """The Engine API arguments for ``opts``; the daemon merges them with the image's config
    as ``docker create`` does (so Docker's own rules apply).  ``ports``: the published
    ports as make_spec resolved them (``-P`` included, as explicit bindings, so that both
    backends publish the same ports on the same addresses)."""
    bad = unsupported(opts)
    if bad:
        raise UsageError(f"the docker backend does not support the option "
                         f"{', '.join(bad)} yet; use the native backend for it")
    container: dict[str, Any] = {
        "command": list(opts.command) if opts.command else None,
        "environment": list(opts.env) or None,
        "working_dir": opts.working_dir or None,
        "user": opts.user,
        "hostname": opts.hostname,
        "name": opts.name.lstrip("/") if opts.name else None,
        "labels": labels,
        "tty": opts.tty,
        "stdin_open": opts.stdin_open,
        "stop_signal": opts.stop_signal,
        "stop_timeout": None if opts.stop_timeout is None else math.ceil(opts.stop_timeout),
        "detach": True,
        "use_config_proxy": False,
    }
    aliases = list(opts.network_aliases)
    if aliases:
        container["networking_config"] = {"EndpointsConfig": {opts.network: {"Aliases": aliases}}}
    if opts.entrypoint is not _UNSET:
        ep = opts.entrypoint
        # [""] clears the image's ENTRYPOINT (an empty list would mean "not given").
        if ep is None or ep == "" or ep == []:
            container["entrypoint"] = [""]
        elif isinstance(ep, str):
            container["entrypoint"] = [ep]
        else:
            container["entrypoint"] = list(ep)  # type: ignore[call-overload]
    binds = [f"{m.source}:{m.target}:{'ro' if m.readonly else 'rw'}"
             for m in opts.mounts if m.kind == "bind"]
    tmpfs = {m.target: m.options for m in opts.mounts if m.kind == "tmpfs"}
    other = [m.kind for m in opts.mounts if m.kind not in ("bind", "tmpfs")]
    if other:
        raise UsageError(f"the docker backend does not support {other[0]} mounts")
    host: dict[str, Any] = {
        "binds": binds or None,
        "tmpfs": tmpfs or None,
        "network_mode": opts.network,
        "extra_hosts": [":".join(parse_add_host(h)) for h in
                        opts.extra_hosts] or None,
        "init": opts.init or None,
        "auto_remove": opts.auto_remove,
    }
    if ports:
        container["ports"] = list(dict.fromkeys((p.container_port, p.proto) for p in ports))
        host["port_bindings"] = {
            key: [{"HostIp": p.host_ip, "HostPort": _host_port(p)}
                  for p in ports if p.key == key]
            for key in dict.fromkeys(p.key for p in ports)}
    if opts.memory:
        # No swap on top, as the native engine: an OOM kill is deterministic.
        host["mem_limit"] = host["memswap_limit"] = opts.memory
    if opts.pids_limit and opts.pids_limit > 0:
        host["pids_limit"] = opts.pids_limit
    if opts.cpus:
        host["nano_cpus"] = int(opts.cpus * 1e9)
    if opts.stop_signal:
        parse_signal(opts.stop_signal)
    return CreateArgs({k: v for k, v in container.items() if v is not None},
                      {k: v for k, v in host.items() if v is not None})


def _host_port(p: PortSpec) -> str:
    """The Engine API's HostPort: "" (the daemon chooses), "8080" or "8000-8010"."""
    if p.host_port is None:
        return ""
    return f"{p.host_port}-{p.host_port_end}" if p.host_port_end else str(p.host_port)


# -- an image config as `docker import --change` lines ------------------------------------

def _quote(value: str) -> str:
    """A double-quoted Dockerfile word with no variable expansion."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def _duration(ns: Any) -> str:
    return f"{int(ns) / 1e9:g}s"


def _healthcheck(check: dict[str, Any]) -> str | None:
    test = list(check.get("Test") or [])
    if not test:
        return None
    if test[0] == "NONE":
        return "HEALTHCHECK NONE"
    flags = [f"--{flag}={_duration(check[key])}" for key, flag in (
        ("Interval", "interval"), ("Timeout", "timeout"), ("StartPeriod", "start-period"))
        if check.get(key)]
    if check.get("Retries"):
        flags.append(f"--retries={int(check['Retries'])}")
    body = f"CMD {test[1]}" if test[0] == "CMD-SHELL" else f"CMD {json.dumps(test[1:])}"
    return " ".join(["HEALTHCHECK", *flags, body])


def config_changes(config: ImageConfig) -> list[str]:
    """Dockerfile lines that give an imported image ``config`` (the instructions Docker's
    import accepts: not SHELL nor STOPSIGNAL)."""
    for what, value in (("SHELL", config.shell), ("STOPSIGNAL", config.stop_signal)):
        if value is not None:
            raise UsageError(f"the docker backend cannot import an image with {what} set "
                             "(docker import does not accept it)")
    out = [f"ENV {key}={_quote(value)}" for key, _, value in
           (e.partition("=") for e in config.env)]
    if config.entrypoint is not None:
        out.append(f"ENTRYPOINT {json.dumps(list(config.entrypoint))}")
    if config.cmd is not None:
        out.append(f"CMD {json.dumps(list(config.cmd))}")
    if config.working_dir:
        out.append(f"WORKDIR {config.working_dir}")
    if config.user:
        out.append(f"USER {config.user}")
    out += [f"EXPOSE {port}" for port in config.exposed_ports]
    out += [f"VOLUME {json.dumps([v])}" for v in config.volumes]
    out += [f"LABEL {_quote(k)}={_quote(v)}" for k, v in config.labels]
    if config.healthcheck:
        line = _healthcheck(config.healthcheck)
        if line:
            out.append(line)
    out += [f"ONBUILD {line}" for line in config.on_build]
    return out
