"""Hooks pytest-pydock offers other plugins (register with ``pytest_addhooks``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .session import Container


@pytest.hookspec(firstresult=True)
def pytest_pydock_select_backend(config: pytest.Config, name: str) -> Any | None:
    """Return the backend object to use for the session, or None to let others decide.

    :param config: the pytest config.
    :param name: the ``--pydock-backend`` value: ``auto``, ``native`` or ``docker``.

    Stops at the first non-None result.  The built-in implementation (tried last) returns
    the native engine for ``native``, a Docker Engine for ``docker`` and, for ``auto``,
    the native engine where it can run (Linux, root), else docker.
    """


def pytest_pydock_container_started(container: Container, nodeid: str | None) -> None:
    """A container is running and ready.

    :param container: the :class:`pytest_pydock.session.Container`.
    :param nodeid: the test that started it (None outside a test, e.g. in a session fixture).
    """


def pytest_pydock_container_finished(container: Container, nodeid: str | None,
                              outcome: str | None) -> None:
    """A container is about to be removed (or kept, by ``--pydock-keep``).

    :param container: the :class:`pytest_pydock.session.Container`.
    :param nodeid: the test that started it, if any.
    :param outcome: ``passed``, ``failed`` or ``skipped`` for the test it belonged to, when
        known; None for containers of session fixtures.
    """
