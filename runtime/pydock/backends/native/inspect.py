"""``docker container inspect``-shaped JSON for a native container."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...models import PortSpec
    from .backend import NativeContainer


def container_doc(c: NativeContainer) -> dict[str, Any]:
    config = c.dir.config
    spec = c.spec
    state = c.state()
    status = state.get("status", "created")
    try:
        image_config = c.backend.store.image(str(config.get("image_id"))).config.to_docker()
    except Exception:  # noqa: BLE001 - the image may be gone (rmi -f)
        image_config = {}
    return {
        "Id": c.id,
        "Created": config.get("created"),
        "Path": spec.argv[0] if spec.argv else "",
        "Args": list(spec.argv[1:]),
        "State": {
            "Status": status,
            "Running": status == "running",
            "Paused": False,
            "Restarting": False,
            "OOMKilled": bool(state.get("oom_killed")),
            "Dead": False,
            "Pid": int(state.get("pid") or 0),
            "ExitCode": int(state.get("exit_code") or 0),
            "Error": state.get("error", ""),
            "StartedAt": state.get("started_at") or "0001-01-01T00:00:00Z",
            "FinishedAt": state.get("finished_at") or "0001-01-01T00:00:00Z",
        },
        "Image": config.get("image_id"),
        "Name": "/" + str(config.get("name")),
        "RestartCount": 0,
        "Mounts": [
            {"Type": m.kind, "Source": m.source, "Destination": m.target,
             "Mode": "ro" if m.readonly else "", "RW": not m.readonly,
             "Propagation": "rprivate" if m.kind == "bind" else ""}
            for m in spec.mounts],
        "NetworkSettings": network_settings(
            c, running=status == "running",
            exposed=[*(image_config.get("ExposedPorts") or {}), *(p.key for p in spec.ports)]),
        "LogPath": str(c.dir.stdout_log),
        "HostConfig": {
            "Binds": [f"{m.source}:{m.target}{':ro' if m.readonly else ''}"
                      for m in spec.mounts if m.kind == "bind"] or None,
            "Tmpfs": {m.target: m.options for m in spec.mounts if m.kind == "tmpfs"} or None,
            "NetworkMode": spec.network,
            "AutoRemove": spec.auto_remove,
            "Init": spec.init,
            "Memory": spec.memory or 0,
            "PidsLimit": spec.pids_limit,
            "NanoCpus": int((spec.cpus or 0) * 1e9),
            "PortBindings": {
                key: [{"HostIp": p.host_ip, "HostPort": _host_port(p)}
                      for p in spec.ports if p.key == key]
                for key in dict.fromkeys(p.key for p in spec.ports)},
        },
        "GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": str(c.dir.upper),
                                                      "WorkDir": str(c.dir.work),
                                                      "MergedDir": str(c.dir.rootfs)}},
        "Config": {
            "Hostname": spec.hostname,
            "User": spec.user,
            "Tty": spec.tty,
            "OpenStdin": spec.stdin_open,
            "Env": [e for e in spec.env if not e.startswith("HOSTNAME=")],  # runtime-added
            "ExposedPorts": {**(image_config.get("ExposedPorts") or {}),
                             **{p.key: {} for p in spec.ports}} or None,
            "Volumes": image_config.get("Volumes"),
            "Cmd": None if spec.cmd is None else list(spec.cmd),
            "Entrypoint": None if spec.entrypoint is None else list(spec.entrypoint),
            "Image": spec.image_name,
            "WorkingDir": spec.working_dir,
            "Labels": dict(spec.labels),
            "StopSignal": spec.stop_signal,
            "StopTimeout": int(spec.stop_timeout),
        },
    }


def network_settings(c: NativeContainer, *, running: bool,
                     exposed: Sequence[str] = ()) -> dict[str, Any]:
    """Docker's NetworkSettings: an entry per network the container is on, with its address
    while it runs (the first network's also at the top level, as for Docker's bridge)."""
    from .network import addresses, endpoints
    live = {net.id: (net, lease) for net, lease in addresses(c.id)} if running else {}
    nets: dict[str, Any] = {}
    if c.spec.network in ("host", "none"):
        nets[c.spec.network] = {"NetworkID": "", "IPAddress": "", "Gateway": "",
                                "IPPrefixLen": 0, "MacAddress": "", "Aliases": None}
    for ep in endpoints(c.dir):
        hit = next(((n, lease) for n, lease in live.values()
                    if ep.network in (n.name, n.id) or (ep.network in ("bridge", "default")
                                                        and n.store is None)), None)
        net, lease = hit if hit else (None, None)
        nets[net.name if net else ep.network] = {
            "NetworkID": net.id if net else "",
            "IPAddress": lease.ip if lease else "",
            "Gateway": net.gateway if net and lease else "",
            "IPPrefixLen": net.prefixlen if net and lease else 0,
            "MacAddress": _mac(lease.ip) if lease else "",
            "Aliases": list(ep.aliases) or None,
        }
    first: dict[str, Any] = next(iter(nets.values()), {})
    return {"Networks": nets, "IPAddress": first.get("IPAddress", ""),
            "Gateway": first.get("Gateway", ""), "IPPrefixLen": first.get("IPPrefixLen", 0),
            "MacAddress": first.get("MacAddress", ""), "Ports": _ports(c, exposed) if running else {}}


def _ports(c: NativeContainer, exposed: Sequence[str]) -> dict[str, Any]:
    """Docker's NetworkSettings.Ports: each exposed or published port, with its host
    bindings while running (None for a port exposed but not published)."""
    bound = {key: [{"HostIp": ip, "HostPort": str(port)} for ip, port in bindings]
             for key, bindings in c.ports().items()}
    return dict.fromkeys(exposed) | bound


def _host_port(p: PortSpec) -> str:
    if p.host_port is None:
        return ""
    return f"{p.host_port}-{p.host_port_end}" if p.host_port_end else str(p.host_port)


def _mac(ip: str) -> str:
    from .network_ipam import mac_of
    return mac_of(ip)
