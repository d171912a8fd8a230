"""``docker container inspect``-shaped JSON for a native container."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        "NetworkSettings": {"Networks": {spec.network: {}}},
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
            "ExposedPorts": image_config.get("ExposedPorts"),
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
