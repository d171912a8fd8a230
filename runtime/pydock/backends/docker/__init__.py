"""The docker backend: containers of a Docker Engine, driven through its API (``pip install
'pytest-pydock[docker]'``), behind the same Backend/Container protocol as the native engine."""

from __future__ import annotations

from .backend import DockerBackend
from .container import DockerContainer

__all__ = ["DockerBackend", "DockerContainer"]
