"""The pytest plugin (entry point ``pytest11``): fixtures over pydock's public API.

Fixtures:
- ``pydock`` (session): a :class:`~pytest_pydock.session.PydockSession`: images, ``run``.
- ``container`` (function): a fresh container of the image named by the ``pydock`` marker,
  ready before the test and removed after it::

      @pytest.mark.pydock(image="busybox", command=["httpd", "-f", "-p", "80"], ready_port=80)
      def test_serves(container): ...

Options (and ini keys): ``--pydock-backend`` (auto|native|docker), ``--pydock-store``,
``--pydock-keep`` (never|failed|always).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydock.errors import BuildError, EngineUnavailable, PydockError

from . import hookspecs
from .options import Keep, Settings

if TYPE_CHECKING:  # the engine is imported when a test needs it, not at every pytest run
    from pydock.ready import Probe

    from .session import Container, PydockSession

KEPT_SHELL = "pydock --store {store} exec -it {name} sh"


settings_key = pytest.StashKey[Settings]()
current_test_key = pytest.StashKey[str | None]()
session_key = pytest.StashKey["PydockSession"]()
outcome_key = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pydock", "containers for tests (pytest-pydock)")
    group.addoption("--pydock-backend", dest="pydock_backend", default=None,
                    help="container engine: auto (default), native or docker")
    group.addoption("--pydock-store", dest="pydock_store", default=None,
                    help="image store directory (default: $PYDOCK_STORE or ~/.cache/pydock)")
    group.addoption("--pydock-keep", dest="pydock_keep", default=None,
                    help="keep containers after their test: never (default), failed, always")
    parser.addini("pydock_backend", "container engine: auto, native or docker", default="auto")
    parser.addini("pydock_store", "image store directory", default="")
    parser.addini("pydock_keep", "keep containers: never, failed or always", default="never")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[settings_key] = Settings.from_config(config)
    config.addinivalue_line(
        "markers",
        "pydock(image, command=None, env=None, ready_port=None, ready_log=None, "
        "network='none', **options): the image (and run options) of the `container` fixture")


@pytest.hookimpl(trylast=True)
def pytest_pydock_select_backend(config: pytest.Config, name: str) -> Any:
    settings = config.stash[settings_key]
    if name == "docker":
        return _docker_backend(settings)
    if name == "auto":
        # native where it can run (Linux, root: namespaces, mounts, cgroups), else docker
        from pydock.backends.native.backend import check_host
        try:
            check_host()
        except EngineUnavailable as native:
            try:
                return _docker_backend(settings)
            except EngineUnavailable as docker:
                raise EngineUnavailable(
                    f"no container engine: native: {native}; docker: {docker}") from None
    from pydock import NativeBackend, Store
    return NativeBackend(Store(settings.store) if settings.store else None)


def _docker_backend(settings: Settings) -> Any:
    from pydock import DockerBackend
    # kept containers must outlive the session: no session label (close/sweep) for them
    return DockerBackend() if settings.keep is Keep.NEVER else DockerBackend(session_label=None)


def pytest_collection_finish(session: pytest.Session) -> None:
    """When a collected test uses the fixtures, the engine starts loading now, while
    pytest goes on to the first test (and its session fixtures)."""
    config = session.config
    if config.option.collectonly or config.stash[settings_key].keep is not Keep.NEVER:
        return
    if not any({"pydock", "container"} & set(getattr(item, "fixturenames", ()))
               for item in session.items):
        return
    _prestart_monitor(config)
    try:
        pd = _session(config)
    except Exception:  # noqa: BLE001 - the fixture reports it, as the error of each test
        return
    warm = getattr(pd.backend, "warm", None)
    if warm is not None:
        warm()


def _prestart_monitor(config: pytest.Config) -> None:
    """Where the native engine will serve this session (no other plugin chooses the
    backend), start its monitor before this process imports the engine (~60 ms): the two
    load side by side, and the first test waits less."""
    settings = config.stash[settings_key]
    if (settings.backend not in ("auto", "native") or not sys.platform.startswith("linux")
            or os.geteuid() != 0
            or len(config.hook.pytest_pydock_select_backend.get_hookimpls()) != 1):
        return
    from pydock.backends.native import spawn
    from pydock.locations import default_store
    try:
        spawn.prestart(Path(settings.store) if settings.store else default_store())
    except OSError:
        pass  # the engine reports it, if it cannot start either


def _session(config: pytest.Config) -> PydockSession:
    if session_key not in config.stash:
        from .session import PydockSession
        settings = config.stash[settings_key]
        backend = config.hook.pytest_pydock_select_backend(config=config, name=settings.backend)
        # xdist's own word, not PYTEST_XDIST_WORKER: a pytest run started from a worker's
        # test (pytester, a subprocess) inherits that variable but is no worker
        worker = getattr(config, "workerinput", {}).get("workerid", "")
        pd = PydockSession(backend, keep=settings.keep, worker=worker,
                           current_test=config.stash.get(current_test_key, None))
        pd.on_started = lambda c: config.hook.pytest_pydock_container_started(
            container=c, nodeid=pd.current_test)
        pd.on_finished = lambda c, nodeid, outcome: (
            config.hook.pytest_pydock_container_finished(container=c, nodeid=nodeid,
                                                          outcome=outcome))
        if not worker:
            pd.on_build_progress = lambda line: _progress(config, line)
        config.stash[session_key] = pd
    return config.stash[session_key]


def _progress(config: pytest.Config, line: str) -> None:
    """A build progress line on the terminal, live (past the test's output capture)."""
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if terminal is None:
        return
    if capture is None:
        terminal.write_line(line)
        return
    with capture.global_and_fixture_disabled():
        terminal.write_line(line)


@pytest.fixture(scope="session")
def pydock(pytestconfig: pytest.Config) -> Iterator[PydockSession]:
    """The session's pydock: ``pydock.image(ref)``, ``pydock.import_image(tar, ref)``,
    ``with pydock.run(image, command, ready=pydock.port(80)) as c: ...``."""
    yield _session(pytestconfig)


@pytest.fixture
def container(request: pytest.FixtureRequest, pydock: PydockSession) -> Iterator[Container]:
    """A fresh container for this test, of the image the ``pydock`` marker names."""
    marker = request.node.get_closest_marker("pydock")
    if marker is None or not (marker.args or "image" in marker.kwargs):
        pytest.fail("the `container` fixture needs @pytest.mark.pydock(image=...) "
                    "(or override the `container` fixture)", pytrace=False)
    options = dict(marker.kwargs)
    image = marker.args[0] if marker.args else options.pop("image")
    probes: list[Probe] = []
    if "ready_port" in options:
        probes.append(pydock.port(options.pop("ready_port")))
    if "ready_log" in options:
        probes.append(pydock.log(options.pop("ready_log")))
    try:
        c = pydock.start(image, options.pop("command", None), ready=probes or None, **options)
    except PydockError as exc:
        pytest.fail(f"pydock: {exc}", pytrace=False)
    yield c
    pydock.finish(c, outcome=request.node.stash.get(outcome_key, "passed"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    item.config.stash[current_test_key] = item.nodeid
    pd = item.config.stash.get(session_key, None)
    if pd is not None:
        pd.current_test = item.nodeid
    try:
        return (yield)
    finally:
        item.config.stash[current_test_key] = None
        pd = item.config.stash.get(session_key, None)
        if pd is not None:
            pd.current_test = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report: pytest.TestReport = yield
    if call.excinfo is not None and call.excinfo.errisinstance(BuildError):
        # A failed build is the error of every test that needs the image: show what failed
        # (Dockerfile line, the command's output), not the plugin's traceback.
        err = call.excinfo.value
        assert isinstance(err, BuildError)
        report.longrepr = f"pydock build failed: {err}" + (
            f"\n--- last output of the step ---\n{err.output}" if err.output else "")
    if report.failed or (report.when == "call" and report.outcome != "passed"):
        item.stash[outcome_key] = "failed"
    pd = item.config.stash.get(session_key, None)
    if pd is not None and report.failed:
        for record in pd.containers_of(item.nodeid):
            pd._snapshot(record)
            c = record.container
            report.sections.append((
                f"pydock container {c.name}",
                f"image: {c.image}\ncommand: {record.command}\n"
                f"status: {record.status}" + (f" (exit code {record.exit_code})"
                                              if record.exit_code is not None else "") +
                ("; removed at teardown" if record.removed else "") + f"\n{record.logs}"))
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    pd = config.stash.get(session_key, None)
    if pd is None or not (pd.records or pd.builds):
        return
    from pydock import NativeBackend
    median = pd.median_start()
    terminalreporter.write_sep("-", "pydock")
    if pd.builds:
        steps = sum(b.executed for b in pd.builds)
        cached = sum(b.cached for b in pd.builds)
        terminalreporter.write_line(
            f"{len(pd.builds)} image build{'s' if len(pd.builds) != 1 else ''}: {steps} step"
            f"{'s' if steps != 1 else ''} run, {cached} from the cache")
    terminalreporter.write_line(
        f"{len(pd.records)} container{'s' if len(pd.records) != 1 else ''} started"
        + (f", median start {median * 1000:.1f} ms" if median is not None else ""))
    for record in pd.kept:
        name = record.container.name
        shell = (KEPT_SHELL.format(store=shlex.quote(str(pd.backend.store.root)), name=name)
                 if isinstance(pd.backend, NativeBackend) else f"docker exec -it {name} sh")
        terminalreporter.write_line(f"kept {name} ({record.test}): {shell}")


def pytest_unconfigure(config: pytest.Config) -> None:
    pd = config.stash.get(session_key, None)
    if pd is not None:
        pd.close()
        del config.stash[session_key]
    spawn = sys.modules.get("pydock.backends.native.spawn")
    if spawn is not None:
        spawn.discard()  # a monitor started ahead for a backend that never came
