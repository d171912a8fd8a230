"""Instructions that only change the image config (ENV, LABEL, CMD, ENTRYPOINT, EXPOSE, VOLUME,
USER, WORKDIR, STOPSIGNAL, HEALTHCHECK, SHELL, ONBUILD, MAINTAINER): pure functions over
already-expanded instructions, with Docker's rules."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..changes import HEALTH_FLAGS, InvalidValue, duration_ns, port_specs, retries_count
from ..dockerfile import Instruction
from ..models import ImageConfig
from ..spec import parse_signal

DEFAULT_SHELL = ("/bin/sh", "-c")


@dataclass(frozen=True)
class StageConfig:
    """What a stage's metadata steps change: the image config, whether CMD was set in this
    stage (ENTRYPOINT resets an inherited CMD, as Docker does), and the MAINTAINER."""

    config: ImageConfig
    cmd_set: bool = False
    author: str | None = None


def shell_of(config: ImageConfig) -> tuple[str, ...]:
    return config.shell or DEFAULT_SHELL


def command_of(ins: Instruction, config: ImageConfig) -> tuple[str, ...]:
    """The argv of RUN/CMD/ENTRYPOINT: JSON form as written, shell form through SHELL."""
    if ins.json:
        return tuple(ins.args)
    return (*shell_of(config), " ".join(ins.args))


def _env(ins: Instruction, state: StageConfig) -> StageConfig:
    config = state.config
    for key, value in ins.key_values():
        config = config.with_env(key, value)
    return replace(state, config=config)


def _label(ins: Instruction, state: StageConfig) -> StageConfig:
    labels = state.config.labels_dict
    labels.update(ins.key_values())
    return replace(state, config=replace(state.config, labels=tuple(sorted(labels.items()))))


def _cmd(ins: Instruction, state: StageConfig) -> StageConfig:
    return replace(state, config=replace(state.config, cmd=command_of(ins, state.config)),
                   cmd_set=True)


def _entrypoint(ins: Instruction, state: StageConfig) -> StageConfig:
    config = replace(state.config, entrypoint=command_of(ins, state.config))
    if ins.json and not ins.args:
        config = replace(config, entrypoint=None)
    if not state.cmd_set:
        config = replace(config, cmd=None)
    return replace(state, config=config)


def _expose(ins: Instruction, state: StageConfig) -> StageConfig:
    ports = set(state.config.exposed_ports)
    for word in ins.args:
        ports.update(port_specs(word))
    return replace(state, config=replace(state.config, exposed_ports=tuple(sorted(ports))))


def _volume(ins: Instruction, state: StageConfig) -> StageConfig:
    paths = [a for a in ins.args]
    if not paths or not all(p.strip() for p in paths):
        raise InvalidValue("VOLUME specified can not be an empty string")
    volumes = tuple(sorted({*state.config.volumes, *paths}))
    return replace(state, config=replace(state.config, volumes=volumes))


def _user(ins: Instruction, state: StageConfig) -> StageConfig:
    return replace(state, config=replace(state.config, user=ins.args[0]))


def workdir_path(current: str, arg: str) -> str:
    """WORKDIR chaining: a relative path is relative to the previous WORKDIR."""
    return posixpath.normpath(posixpath.join("/", current or "/", arg))


def _workdir(ins: Instruction, state: StageConfig) -> StageConfig:
    path = workdir_path(state.config.working_dir, ins.args[0])
    return replace(state, config=replace(state.config, working_dir=path))


def _stopsignal(ins: Instruction, state: StageConfig) -> StageConfig:
    sig = ins.args[0]
    try:
        parse_signal(sig)
    except Exception:
        raise InvalidValue(f"invalid signal {sig!r}") from None
    return replace(state, config=replace(state.config, stop_signal=sig))


def _healthcheck(ins: Instruction, state: StageConfig) -> StageConfig:
    kind = ins.args[0].upper()
    if kind == "NONE":
        check: dict[str, Any] = {"Test": ["NONE"]}
    else:
        test = ["CMD", *ins.args[1:]] if ins.json else ["CMD-SHELL", " ".join(ins.args[1:])]
        check = {"Test": test}
        for key, value in ins.flags:
            check[HEALTH_FLAGS[key]] = retries_count(value) if key == "retries" \
                else duration_ns(value)
    return replace(state, config=replace(state.config, healthcheck=check))


def _shell(ins: Instruction, state: StageConfig) -> StageConfig:
    return replace(state, config=replace(state.config, shell=tuple(ins.args)))


def _onbuild(ins: Instruction, state: StageConfig) -> StageConfig:
    triggers = (*state.config.on_build, ins.args[0])
    return replace(state, config=replace(state.config, on_build=triggers))


def _maintainer(ins: Instruction, state: StageConfig) -> StageConfig:
    return replace(state, author=" ".join(ins.args))


HANDLERS: dict[str, Callable[[Instruction, StageConfig], StageConfig]] = {
    "ENV": _env, "LABEL": _label, "CMD": _cmd, "ENTRYPOINT": _entrypoint, "EXPOSE": _expose,
    "VOLUME": _volume, "USER": _user, "WORKDIR": _workdir, "STOPSIGNAL": _stopsignal,
    "HEALTHCHECK": _healthcheck, "SHELL": _shell, "ONBUILD": _onbuild,
    "MAINTAINER": _maintainer,
}


def apply(ins: Instruction, state: StageConfig) -> StageConfig:
    """``state`` after the metadata instruction ``ins`` (expanded); ``InvalidValue`` when a
    value is wrong (the caller places it at the instruction's line)."""
    return HANDLERS[ins.cmd](ins, state)
