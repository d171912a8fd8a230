"""The build driver: a parsed Dockerfile and a context become an image in the store, stage by
stage (only the stages the target needs), step by step through the build cache."""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import hashlib
import json
import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import dockerfile as df
from ..backends.native.backend import NativeBackend
from ..changes import InvalidValue
from ..errors import BuildError, DockerfileError, ImageNotFound, PydockError
from ..expand import parse_heredoc_marker, split_words
from ..models import Image, ImageConfig
from ..spec import RunOptions
from ..store import Store
from . import history, metadata, mounts, steps, transfer
from .cache import BuildCache, encode, step_key
from .context import BuildContext, ContextError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Build args every Dockerfile may use without declaring them (kept out of the image history).
PROXY_ARGS = frozenset({"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
                        "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"})

_CONFIG_KEYS = frozenset({"Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts",
                          "Labels", "Volumes", "StopSignal", "Healthcheck", "OnBuild", "Shell"})


@dataclass(frozen=True)
class BuildOptions:
    """What ``pydock build`` takes.  ``dockerfile`` is a path (default ``CONTEXT/Dockerfile``);
    ``dockerfile_text`` replaces reading it (``-f -``)."""

    context: str
    dockerfile: str | None = None
    dockerfile_text: str | None = None
    tags: tuple[str, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildResult:
    image: Image
    steps: int          # steps of the stages built (FROM included)
    cached: int         # instructions served from the cache
    executed: int       # instructions this build ran (the others of the stages: FROM lines)
    warnings: tuple[str, ...] = ()


class BuildReporter:
    """Where a build's progress goes; the default says nothing.  The CLI prints Docker's
    classic lines (``Step 2/9 : RUN make``, `` ---> Using cache``, the RUN output)."""

    def step(self, number: int, total: int, text: str) -> None: ...

    def note(self, text: str) -> None: ...

    def output(self, data: bytes) -> None: ...


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def _architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def image_of(data: bytes) -> Image:
    """An in-memory Image for config bytes (what a step's container is created from)."""
    doc = json.loads(data)
    return Image(id=f"sha256:{hashlib.sha256(data).hexdigest()}",
                 config=ImageConfig.from_oci(doc.get("config")),
                 diff_ids=tuple(doc["rootfs"]["diff_ids"]), created=str(doc.get("created", "")))


def _with_config(doc: dict[str, Any], config: ImageConfig) -> None:
    old = doc.get("config") or {}
    merged = {k: v for k, v in old.items() if k not in _CONFIG_KEYS}
    merged.update(config.to_oci())
    doc["config"] = merged


def needed_stages(dfile: df.Dockerfile, target: str | None) -> list[df.Stage]:
    """The stages the target (default: the last) depends on, in file order."""
    try:
        last = dfile.stage(target) if target is not None else dfile.stages[-1]
    except KeyError:
        names = ", ".join(s.name for s in dfile.stages if s.name) or "none"
        raise BuildError(f"target stage {target!r} could not be found (stages: {names})",
                         path=dfile.path) from None
    wanted = {last.index}
    for stage in reversed(dfile.stages[: last.index + 1]):
        if stage.index not in wanted:
            continue
        refs = [stage.base] + [ins.flag("from") or "" for ins in stage.instructions
                               if ins.cmd == "COPY"]
        for ref in refs:
            dep = _stage_ref(dfile, ref, before=stage.index)
            if dep is not None:
                wanted.add(dep.index)
    return [s for s in dfile.stages if s.index in wanted]


def _stage_ref(dfile: df.Dockerfile, ref: str, *, before: int) -> df.Stage | None:
    """The earlier stage ``ref`` names (a name or an index), if it names one."""
    if not ref:
        return None
    try:
        stage = dfile.stage(int(ref) if ref.isdecimal() else ref)
    except KeyError:
        return None
    return stage if stage.index < before else None


class Builder:
    """One build: options, store, the native backend for RUN/COPY containers, the cache."""

    def __init__(self, store: Store, opts: BuildOptions, *, backend: NativeBackend | None = None,
                 reporter: BuildReporter | None = None,
                 resolve_base: Callable[[Store, str], Image] | None = None) -> None:
        self.store = store
        self.opts = opts
        self.reporter = reporter or BuildReporter()
        self._backend = backend
        self._own_backend = backend is None
        self.cache = BuildCache(store)
        self.resolve_base = resolve_base
        self.path = ""
        self.step_number = 0
        self.total = 0
        self.cached = 0
        self.executed = 0
        self.used_args: set[str] = set()
        self.temp_files: list[str] = []

    @property
    def backend(self) -> NativeBackend:
        if self._backend is None:
            self._backend = NativeBackend(self.store)
        return self._backend

    def close(self) -> None:
        for path in self.temp_files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if self._own_backend and self._backend is not None:
            self._backend.close()
            self._backend = None

    # -- the whole build -------------------------------------------------------------------

    def build(self) -> BuildResult:
        text, self.path, dockerfile_path = self._read_dockerfile()
        dfile = df.parse(text, path=self.path)
        try:
            self.context = BuildContext(self.opts.context, dockerfile=dockerfile_path)
        except ContextError as exc:
            raise BuildError(str(exc)) from None
        self.dfile = dfile
        stages = needed_stages(dfile, self.opts.target)
        self.total = sum(1 + len(s.instructions) for s in stages)
        self.global_args = self._global_args(dfile)
        self.results: dict[int, tuple[str, bytes]] = {}
        for stage in stages:
            self.results[stage.index] = self._stage(stage)
        key, data = self.results[stages[-1].index]
        if self.opts.labels:
            doc = json.loads(data)
            config = ImageConfig.from_oci(doc.get("config"))
            labels = {**config.labels_dict, **self.opts.labels}
            _with_config(doc, ImageConfig(**{**config.__dict__,
                                             "labels": tuple(sorted(labels.items()))}))
            data = encode(doc)
        image = self.store.add_image_config(data)
        for tag in self.opts.tags:
            self.store.tag(image.id, tag)
        return BuildResult(self.store.image(image.id), self.total, self.cached,
                           self.executed, self._unused_args())

    def _read_dockerfile(self) -> tuple[str, str, str | None]:
        if self.opts.dockerfile_text is not None:
            return self.opts.dockerfile_text, self.opts.dockerfile or "Dockerfile", None
        path = self.opts.dockerfile or os.path.join(self.opts.context, "Dockerfile")
        try:
            return Path(path).read_text(encoding="utf-8", errors="surrogateescape"), path, path
        except FileNotFoundError:
            raise BuildError(f"cannot read the Dockerfile {path}: no such file") from None
        except OSError as exc:
            raise BuildError(f"cannot read the Dockerfile {path}: {exc.strerror}") from None

    def _global_args(self, dfile: df.Dockerfile) -> dict[str, str]:
        values: dict[str, str] = {
            "TARGETPLATFORM": f"linux/{_architecture()}", "TARGETOS": "linux",
            "TARGETARCH": _architecture(), "BUILDPLATFORM": f"linux/{_architecture()}",
            "BUILDOS": "linux", "BUILDARCH": _architecture(),
        }
        for decl in dfile.global_args:
            if decl.name in self.opts.build_args:
                values[decl.name] = self.opts.build_args[decl.name]
                self.used_args.add(decl.name)
            elif decl.default is not None:
                values[decl.name] = self._expand_word(decl.default, values, decl.line, "ARG")
        return values

    def _unused_args(self) -> tuple[str, ...]:
        unused = sorted(set(self.opts.build_args) - self.used_args - PROXY_ARGS)
        if not unused:
            return ()
        return (f"One or more build-args {unused} were not consumed",)

    def _expand_word(self, word: str, env: Mapping[str, str], line: int, cmd: str) -> str:
        from ..expand import expand
        try:
            return expand(word, env, escape=self.dfile.escape if hasattr(self, "dfile") else "\\")
        except DockerfileError as exc:
            raise exc.located(path=self.path, line=line, instruction=cmd) from None

    def _error(self, ins_line: int, cmd: str, reason: str, **kw: Any) -> BuildError:
        return BuildError(reason, path=self.path, line=ins_line, instruction=cmd, **kw)

    # -- one stage -------------------------------------------------------------------------

    def _stage(self, stage: df.Stage) -> tuple[str, bytes]:
        self.step_number += 1
        self.reporter.step(self.step_number, self.total, stage.original or f"FROM {stage.base}")
        base_ref = self._expand_word(stage.base, self.global_args, stage.line, "FROM")
        if stage.platform:
            wanted = self._expand_word(stage.platform, self.global_args, stage.line, "FROM")
            host = f"linux/{_architecture()}"
            if wanted.lower() not in (host, "linux", f"{host}/v1"):
                raise self._error(stage.line, "FROM", f"--platform={wanted}: only the host "
                                  f"platform ({host}) can be built here (no emulation)")
        key, data = self._base(base_ref, stage)
        doc = json.loads(data)
        config = ImageConfig.from_oci(doc.get("config"))
        triggers = config.on_build
        state = StageState(args={}, cmd_set=False)
        if triggers:
            # The child build runs the base's ONBUILD triggers; its image does not keep them.
            self.reporter.note(f"# Executing {len(triggers)} build trigger"
                               f"{'s' if len(triggers) > 1 else ''}")
            doc = copy.deepcopy(doc)
            _with_config(doc, ImageConfig(**{**config.__dict__, "on_build": ()}))
            data = encode(doc)
            key = step_key(key, "ONBUILD-reset")
            for text in triggers:
                try:
                    ins = df.parse_trigger(text, path=self.path, line=stage.line,
                                           escape=self.dfile.escape)
                except DockerfileError as exc:
                    raise exc.located(path=self.path, line=stage.line,
                                      instruction="FROM") from None
                key, data = self._instruction(ins, key, data, state, stage)
        self.reporter.note(f" ---> {image_of(data).short_id}")
        for ins in stage.instructions:
            self.step_number += 1
            self.reporter.step(self.step_number, self.total, ins.original)
            key, data = self._instruction(ins, key, data, state, stage)
            self.reporter.note(f" ---> {image_of(data).short_id}")
        return key, data

    def _base(self, ref: str, stage: df.Stage) -> tuple[str, bytes]:
        if ref.lower() == "scratch":
            doc = {"architecture": _architecture(), "os": "linux", "created": _now(),
                   "config": {"Env": [f"PATH={DEFAULT_PATH}"]},
                   "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
            return step_key("scratch"), encode(doc)
        dep = _stage_ref(self.dfile, ref, before=stage.index)
        if dep is not None and not ref.isdecimal():
            return self.results[dep.index]
        try:
            image = self.resolve_base(self.store, ref) if self.resolve_base is not None \
                else self.store.image(ref)
        except ImageNotFound:
            raise self._error(stage.line, "FROM", f"base image {ref!r} not found: pull, "
                              "load or import it first (see `pydock images`)") from None
        except PydockError as exc:
            raise self._error(stage.line, "FROM", f"base image {ref!r}: {exc}") from None
        try:
            data = self.store.config_bytes(image)
        except PydockError as exc:  # removed meanwhile
            raise self._error(stage.line, "FROM", f"base image {ref!r}: {exc}") from None
        return step_key("image", image.id), data

    # -- one instruction -------------------------------------------------------------------

    def _env(self, state: StageState, config: ImageConfig) -> dict[str, str]:
        """What an instruction's words expand against: the stage's ARGs, then ENV (which wins)."""
        return {**state.args, **config.env_dict()}

    def _instruction(self, ins: df.Instruction, key: str, data: bytes, state: StageState,
                     stage: df.Stage) -> tuple[str, bytes]:
        doc = json.loads(data)
        config = ImageConfig.from_oci(doc.get("config"))
        if ins.cmd == "ARG":
            self._arg(ins, state, config)
        expanded = df.expand_instruction(ins, self._env(state, config), escape=self.dfile.escape,
                                         path=self.path)
        if ins.cmd == "CMD":
            state.cmd_set = True
        parts, execute = self._plan(expanded, state, config, stage,
                                    lambda new: self._created_by(ins, expanded, state, new))
        new_key = step_key(key, *parts)
        if not self.opts.no_cache:
            hit = self.cache.get(new_key)
            if hit is not None:
                self.cached += 1
                self.reporter.note(" ---> Using cache")
                return new_key, hit
        with self.cache.locked(new_key):
            hit = None if self.opts.no_cache else self.cache.get(new_key)
            if hit is not None:  # another process built it meanwhile
                self.cached += 1
                self.reporter.note(" ---> Using cache")
                return new_key, hit
            new_doc = execute(copy.deepcopy(doc), data)
            self.executed += 1
            out = encode(new_doc)
            self.cache.put(new_key, out)
        return new_key, out

    def _arg(self, ins: df.Instruction, state: StageState, config: ImageConfig) -> None:
        env = self._env(state, config)
        for decl in df.arg_decls(ins):
            if decl.name in self.opts.build_args:
                state.args[decl.name] = self.opts.build_args[decl.name]
                self.used_args.add(decl.name)
            elif decl.default is not None:
                state.args[decl.name] = self._expand_word(decl.default, env, ins.line, "ARG")
            elif decl.name in self.global_args:
                state.args[decl.name] = self.global_args[decl.name]
            env = self._env(state, config)

    def _plan(self, ins: df.Instruction, state: StageState, config: ImageConfig,
              stage: df.Stage, created_by: Callable[[ImageConfig], str]
              ) -> tuple[tuple[str, ...], Callable[[dict[str, Any], bytes], dict[str, Any]]]:
        """The cache-key parts of a step and the function that executes it."""
        if ins.cmd == "ARG":
            values = tuple(f"{d.name}={state.args.get(d.name, '')}" for d in df.arg_decls(ins))
            return ("ARG", *values), lambda doc, _: self._nop(doc, created_by(config))
        if ins.cmd in metadata.HANDLERS:
            return (ins.cmd, json.dumps([ins.args, ins.flags, ins.json])), \
                lambda doc, _: self._metadata(doc, ins, config, state, created_by)
        if ins.cmd == "RUN":
            run = self._run_step(ins, state, config)
            binds = [m for m in run.mounts if m.kind == "bind"]
            inputs = self.context.digest(match for m in binds
                                         for match in self.context.resolve(m.source)) \
                if binds else ""
            return ("RUN", json.dumps([run.argv, sorted(self._run_args(state, config)),
                                       run.network, ins.flag_values("mount")]), inputs), \
                lambda doc, data: self._run(doc, data, ins, run)
        if ins.cmd in ("COPY", "ADD"):
            return transfer.plan(self, ins, state, config, stage)
        raise self._error(ins.line, ins.cmd, f"{ins.cmd} is not supported by the builder")

    def _history(self, doc: dict[str, Any], created_by: str, *, empty: bool) -> None:
        now = _now()
        entry: dict[str, Any] = {"created": now, "created_by": created_by}
        if empty:
            entry["empty_layer"] = True
        doc.setdefault("history", []).append(entry)
        doc["created"] = now

    def _commit(self, doc: dict[str, Any], diff_id: str | None, created_by: str) -> None:
        """Record a step: its layer, if it changed anything (Docker adds no empty layer),
        and its history entry."""
        if diff_id is not None:
            doc["rootfs"]["diff_ids"].append(diff_id)
        self._history(doc, created_by, empty=diff_id is None)

    def _created_by(self, raw: df.Instruction, ins: df.Instruction, state: StageState,
                    config: ImageConfig) -> str:
        """The history text of a metadata step (the classic builder's), ``config`` being
        the image config after it."""
        cmd = ins.cmd
        if cmd in ("ENV", "LABEL"):
            text = history.pairs(cmd, ins.key_values())
        elif cmd in ("CMD", "ENTRYPOINT"):
            value = config.cmd if cmd == "CMD" else config.entrypoint
            text = f"{cmd} {history.go_quote_list(value)}"
        elif cmd == "EXPOSE":  # sorted as written, then expanded (Docker's order)
            env = self._env(state, config)
            text = " ".join(["EXPOSE", *(w for arg in sorted(raw.args)
                                         for w in split_words(arg, env,
                                                              escape=self.dfile.escape))])
        elif cmd in ("VOLUME", "SHELL"):
            text = f"{cmd} [{' '.join(ins.args)}]"
        elif cmd == "HEALTHCHECK":
            text = f"HEALTHCHECK {history.healthcheck(config.healthcheck)}"
        elif cmd == "ARG":
            text = " ".join(["ARG", *(d.name if d.default is None else f"{d.name}={d.default}"
                                      for d in df.arg_decls(ins))])
        else:  # USER, STOPSIGNAL, MAINTAINER, ONBUILD (WORKDIR: make_workdir)
            text = " ".join([cmd, *ins.args])
        return history.nop(metadata.shell_of(config), text)

    def _nop(self, doc: dict[str, Any], created_by: str) -> dict[str, Any]:
        self._history(doc, created_by, empty=True)
        return doc

    def _metadata(self, doc: dict[str, Any], ins: df.Instruction, config: ImageConfig,
                  state: StageState, created_by: Callable[[ImageConfig], str]
                  ) -> dict[str, Any]:
        cfg = metadata.StageConfig(config, cmd_set=state.cmd_set and ins.cmd != "CMD")
        try:
            new = metadata.apply(ins, cfg)
        except InvalidValue as exc:
            raise self._error(ins.line, ins.cmd, str(exc)) from None
        _with_config(doc, new.config)
        if new.author is not None:
            doc["author"] = new.author
        if ins.cmd == "WORKDIR":
            try:
                transfer.make_workdir(self, doc, new.config)
            except (steps.StepFailed, PydockError) as exc:
                raise self._error(ins.line, ins.cmd, f"WORKDIR failed: {exc}") from None
            return doc
        self._history(doc, created_by(new.config), empty=True)
        return doc

    # -- RUN -------------------------------------------------------------------------------

    def _run_args(self, state: StageState, config: ImageConfig) -> list[str]:
        env = config.env_dict()
        args = {k: v for k, v in state.args.items() if k not in env}
        for name in PROXY_ARGS:
            if name in self.opts.build_args and name not in env:
                args[name] = self.opts.build_args[name]
                self.used_args.add(name)
        return [f"{k}={v}" for k, v in args.items()]

    def _run_step(self, ins: df.Instruction, state: StageState, config: ImageConfig) -> steps.Run:
        network = ins.flag("network") or "default"
        if network not in ("default", "host", "none"):
            raise self._error(ins.line, "RUN", f"--network={network}: expected default, host "
                              "or none")
        try:
            run_mounts = tuple(mounts.parse(m, workdir=config.working_dir)
                               for m in ins.flag_values("mount"))
        except mounts.MountError as exc:
            raise self._error(ins.line, "RUN", str(exc)) from None
        if ins.heredocs and not ins.json:
            marker = parse_heredoc_marker(ins.args[0]) if len(ins.args) == 1 else None
            if marker is not None and marker.name == ins.heredocs[0].name:
                script = ins.heredocs[0].data  # the heredoc is the whole script
            else:  # heredocs feed commands: the shell reads them itself
                script = " ".join(ins.args)
                for doc in ins.heredocs:
                    script += f"\n{doc.content}{doc.name}"
            argv = (*metadata.shell_of(config), script)
        else:
            argv = metadata.command_of(ins, config)
        env = (*config.env, *self._run_args(state, config))
        return steps.Run(argv=tuple(argv), env=tuple(env), user=config.user,
                         workdir=config.working_dir or "/",
                         network="none" if network == "none" else "host", mounts=run_mounts,
                         volumes=config.volumes,
                         shown_args=tuple(sorted(self._shown_args(state, config).items())))

    def _run(self, doc: dict[str, Any], data: bytes, ins: df.Instruction,
             run: steps.Run) -> dict[str, Any]:
        image = image_of(data)
        try:
            engine_mounts = tuple(mounts.to_mount(m, cache_root=self.cache.dir,
                                                  context_root=self.context.root)
                                  for m in run.mounts)
            diff_id = steps.run(self.backend, image, run, output=self.reporter.output,
                                mounts=engine_mounts)
        except (mounts.MountError, ContextError) as exc:
            raise self._error(ins.line, "RUN", str(exc)) from None
        except steps.StepFailed as exc:
            raise self._error(ins.line, "RUN", str(exc), exit_code=exc.exit_code,
                              output=exc.output) from None
        except PydockError as exc:
            raise self._error(ins.line, "RUN", f"cannot run the step: {exc}") from None
        self._commit(doc, diff_id, history.run_text(run.argv, dict(run.shown_args)))
        return doc

    def _shown_args(self, state: StageState, config: ImageConfig) -> dict[str, str]:
        """The build args a RUN's history names (``|1 VERSION=1.0 ...``): the stage's ARGs
        with a value that ENV does not override."""
        env = config.env_dict()
        return {k: v for k, v in state.args.items() if k not in env}

    def container_options(self, config: ImageConfig) -> RunOptions:
        """Options of the short-lived containers COPY/ADD/WORKDIR write through."""
        return RunOptions(command=["true"], entrypoint=None, network="none",
                          user="0:0", working_dir="/")


@dataclass
class StageState:
    """What one stage carries from step to step besides the image: its ARG values and
    whether CMD was set in it (ENTRYPOINT then keeps it)."""

    args: dict[str, str]
    cmd_set: bool


def build(store: Store, opts: BuildOptions, *, backend: NativeBackend | None = None,
          reporter: BuildReporter | None = None,
          resolve_base: Callable[[Store, str], Image] | None = None) -> BuildResult:
    """Build ``opts`` into ``store``; ``DockerfileError`` for a bad Dockerfile, ``BuildError``
    for a failing step (with the RUN's exit code and output)."""
    builder = Builder(store, opts, backend=backend, reporter=reporter, resolve_base=resolve_base)
    try:
        return builder.build()
    finally:
        builder.close()


