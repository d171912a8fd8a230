"""Import rules are the architecture: the engine never imports pytest."""

from __future__ import annotations

import os
import subprocess
import sys


def test_pydock_does_not_import_pytest() -> None:
    code = (
        "import sys, pydock, pydock.cli, pydock.store, pydock.spec, "
        "pydock.backends.native.backend, pydock.backends.native.monitor\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "[]"


def test_public_api_names_resolve() -> None:
    import pydock

    for name in pydock.__all__:
        assert getattr(pydock, name).__name__ == name


def test_importing_one_submodule_loads_only_what_it_needs() -> None:
    code = ("import sys, pydock.backends.native.monitor\n"
            "print('pydock.store' in sys.modules, 'filelock' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.split() == ["False", "False"], r.stderr


def test_the_zygote_factory_stays_small() -> None:
    """Every page a zygote writes is copied from the factory: the factory's process imports
    none of the standard library's larger modules (factory.py, child.py)."""
    code = ("import sys, pydock.backends.native.factory\n"
            "print(sorted({'collections', 'dataclasses', 'enum', 'functools', 'json', "
            "'pathlib', 'pickle', 'signal', 'socket', 'typing'} & set(sys.modules)))")
    import pydock
    root = os.path.dirname(os.path.dirname(pydock.__file__))  # as the monitor finds it
    r = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=root))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_the_monitor_loads_no_dataclasses() -> None:
    """Each session's first container waits for its monitor to load: the monitor reads a
    container's spec as plain data (state.LaunchSpec), without pydock.models, dataclasses
    (and inspect) or typing, ~35 ms of imports."""
    code = ("import sys, pydock.backends.native.monitor\n"
            "print(sorted({'pydock.models', 'dataclasses', 'inspect', 'typing', 'shutil'} "
            "& set(sys.modules)))")
    import pydock
    root = os.path.dirname(os.path.dirname(pydock.__file__))  # as spawn.py starts it
    r = subprocess.run([sys.executable, "-S", "-P", "-c", code], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=root))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_the_plugin_loads_no_engine_until_a_test_needs_one() -> None:
    """pytest loads the plugin in every run of a project that has it installed: that
    costs no engine import (the store, a backend, the readiness probes' HTTP client)."""
    code = ("import sys, pytest, pytest_pydock.plugin\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pydock'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['pydock', 'pydock.errors']"
