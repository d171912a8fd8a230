"""Apply Dockerfile-style ``--change`` lines (docker import/commit) to an image config.

Allowed, as in Docker: CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL,
USER, VOLUME, WORKDIR.  Values of ENV, LABEL, WORKDIR, USER, EXPOSE, VOLUME and STOPSIGNAL go
through Docker's shell-word processing (:mod:`pydock.expand`: quotes, escapes, ``$VAR`` and the
``${VAR...}`` forms, from the image's environment).  Unlike a Dockerfile build, ENTRYPOINT leaves
CMD as it is (what ``docker import --change`` does).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import dockerfile

from .dockerfile import parse_duration
from .errors import DockerfileError, UsageError
from .expand import expand, split_words
from .models import ImageConfig
from .spec import parse_signal

_PROTOCOLS = ("tcp", "udp", "sctp")
HEALTH_FLAGS = {"interval": "Interval", "timeout": "Timeout", "start-period": "StartPeriod",
                 "start-interval": "StartInterval", "retries": "Retries"}


class InvalidValue(Exception):
    """A --change line is wrong; the message says why (wrapped with the line by the caller)."""


# -- instructions -----------------------------------------------------------------------------


def _pairs(cmd: Any, config: ImageConfig) -> list[tuple[str, str]]:
    values = cmd.value
    if not values or len(values) % 2:
        raise InvalidValue(f"{cmd.cmd.upper()} needs KEY=VALUE pairs")
    env = config.env_dict()
    return [(expand(k, env), expand(v, env)) for k, v in zip(values[::2], values[1::2], strict=False)]


def _one(cmd: Any, config: ImageConfig) -> str:
    if len(cmd.value) != 1:
        raise InvalidValue(f"{cmd.cmd.upper()} takes exactly one argument")
    return expand(cmd.value[0], config.env_dict())


def _command(cmd: Any, config: ImageConfig) -> tuple[str, ...]:
    if cmd.json:
        return tuple(cmd.value)
    if not cmd.value:
        raise InvalidValue(f"{cmd.cmd.upper()} needs a command")
    return (*(config.shell or ("/bin/sh", "-c")), cmd.value[0])


def _env(cmd: Any, config: ImageConfig) -> ImageConfig:
    for key, value in _pairs(cmd, config):  # all of a line's values see the env before it
        if not key:
            raise InvalidValue("ENV names an empty variable")
        config = config.with_env(key, value)
    return config


def _label(cmd: Any, config: ImageConfig) -> ImageConfig:
    labels = config.labels_dict
    labels.update(_pairs(cmd, config))
    return replace(config, labels=tuple(sorted(labels.items())))


def port_specs(spec: str) -> list[str]:
    port, _, proto = spec.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in _PROTOCOLS:
        raise InvalidValue(f"invalid protocol in port {spec!r} (tcp, udp or sctp)")
    first, _, last = port.partition("-")
    try:
        low, high = int(first), int(last or first)
    except ValueError:
        raise InvalidValue(f"invalid port {spec!r}") from None
    if not 1 <= low <= high <= 65535:
        raise InvalidValue(f"invalid port range {spec!r} (1-65535)")
    return [f"{n}/{proto}" for n in range(low, high + 1)]


def _expose(cmd: Any, config: ImageConfig) -> ImageConfig:
    if not cmd.value:
        raise InvalidValue("EXPOSE needs at least one port")
    env = config.env_dict()
    ports = set(config.exposed_ports)
    for word in cmd.value:
        for spec in split_words(word, env):
            ports.update(port_specs(spec))
    return replace(config, exposed_ports=tuple(sorted(ports)))


def _volume(cmd: Any, config: ImageConfig) -> ImageConfig:
    env = config.env_dict()
    paths = [expand(v, env) for v in cmd.value]
    if not paths or not all(paths):
        raise InvalidValue("VOLUME needs a path")
    return replace(config, volumes=tuple(sorted({*config.volumes, *paths})))


def _workdir(cmd: Any, config: ImageConfig) -> ImageConfig:
    path = _one(cmd, config)
    return replace(config, working_dir=posixpath.normpath(
        posixpath.join("/", config.working_dir, path)))


def _stopsignal(cmd: Any, config: ImageConfig) -> ImageConfig:
    sig = _one(cmd, config)
    try:
        parse_signal(sig)  # the one definition of a valid signal (run --stop-signal uses it)
    except UsageError:
        raise InvalidValue(f"invalid signal {sig!r}") from None
    return replace(config, stop_signal=sig)


def duration_ns(text: str) -> int:
    try:
        total = parse_duration(text)
    except ValueError:
        raise InvalidValue(f"invalid duration {text!r} (e.g. 30s, 1m30s, 500ms)") from None
    if total < 1_000_000:
        raise InvalidValue(f"duration {text!r} must be at least 1ms")
    return total


def _healthcheck(cmd: Any, config: ImageConfig) -> ImageConfig:
    if not cmd.value:
        raise InvalidValue("HEALTHCHECK needs NONE or CMD")
    kind = cmd.value[0].upper()
    if kind == "NONE":
        if len(cmd.value) > 1 or cmd.flags:
            raise InvalidValue("HEALTHCHECK NONE takes no arguments")
        return replace(config, healthcheck={"Test": ["NONE"]})
    if kind != "CMD" or len(cmd.value) < 2:
        raise InvalidValue("HEALTHCHECK needs NONE or CMD <command>")
    test = ["CMD", *cmd.value[1:]] if cmd.json else ["CMD-SHELL", cmd.value[1]]
    check: dict[str, Any] = {"Test": test}
    for flag in cmd.flags:
        key, _, value = flag.removeprefix("--").partition("=")
        if key not in HEALTH_FLAGS:
            raise InvalidValue(f"unknown HEALTHCHECK flag {flag!r}")
        check[HEALTH_FLAGS[key]] = retries_count(value) if key == "retries" else duration_ns(value)
    return replace(config, healthcheck=check)


def retries_count(value: str) -> int:
    if not value.isdigit():
        raise InvalidValue(f"--retries must be a whole number, not {value!r}")
    return int(value)


def _onbuild(cmd: Any, config: ImageConfig) -> ImageConfig:
    trigger = cmd.original.split(None, 1)[1] if len(cmd.original.split(None, 1)) > 1 else ""
    if not cmd.sub_cmd or cmd.sub_cmd.upper() in ("ONBUILD", "FROM", "MAINTAINER"):
        raise InvalidValue(f"invalid ONBUILD trigger {trigger!r}")
    return replace(config, on_build=(*config.on_build, trigger))


def _cmd(cmd: Any, config: ImageConfig) -> ImageConfig:
    return replace(config, cmd=_command(cmd, config))


def _entrypoint(cmd: Any, config: ImageConfig) -> ImageConfig:
    return replace(config, entrypoint=_command(cmd, config))


def _user(cmd: Any, config: ImageConfig) -> ImageConfig:
    return replace(config, user=_one(cmd, config))


_HANDLERS: dict[str, Callable[[Any, ImageConfig], ImageConfig]] = {
    "CMD": _cmd,
    "ENTRYPOINT": _entrypoint,
    "ENV": _env,
    "EXPOSE": _expose,
    "HEALTHCHECK": _healthcheck,
    "LABEL": _label,
    "ONBUILD": _onbuild,
    "STOPSIGNAL": _stopsignal,
    "USER": _user,
    "VOLUME": _volume,
    "WORKDIR": _workdir,
}


def apply_changes(config: ImageConfig, changes: Sequence[str]) -> ImageConfig:
    """Apply each ``--change`` line in order; raises ``DockerfileError`` naming a bad line."""
    for change in changes:
        if not change.strip():
            continue
        try:
            commands = dockerfile.parse_string(change)
        except dockerfile.GoParseError as exc:
            raise DockerfileError(f"invalid --change {change!r}: {exc}") from None
        for cmd in commands:
            instruction = cmd.cmd.upper()
            handler = _HANDLERS.get(instruction)
            if handler is None:
                raise DockerfileError(
                    f"invalid --change {change!r}: {instruction} is not allowed here "
                    f"(allowed: {', '.join(_HANDLERS)})"
                )
            try:
                config = handler(cmd, config)
            except InvalidValue as exc:
                raise DockerfileError(f"invalid --change {change!r}: {exc}") from None
            except DockerfileError as exc:
                raise DockerfileError(f"invalid --change {change!r}: {exc.reason}") from None
    return config
