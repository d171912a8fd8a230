"""pydock: a daemonless container engine for tests (images in a local store, containers that
start in milliseconds).  The public API is what ``__all__`` lists; the pytest plugin uses
nothing else.

    from pydock import NativeBackend

    with NativeBackend() as engine:
        c = engine.run("busybox", command=["sleep", "60"], init=True)
        print(c.exec(["echo", "hi"]).stdout)
        c.remove(force=True)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Where each public name lives.  Loaded on first use (PEP 562), so that importing one
# submodule (the monitor process imports only what it needs) does not load them all.
_EXPORTS = {
    "Backend": "backends.base", "Capabilities": "backends.base", "Container": "backends.base",
    "Status": "backends.base",
    "NativeBackend": "backends.native.backend", "NativeContainer": "backends.native.backend",
    "ContainerError": "errors", "ContainerNotFound": "errors", "DockerfileError": "errors",
    "EngineUnavailable": "errors", "ExecError": "errors", "ImageNotFound": "errors",
    "InvalidState": "errors", "LayerError": "errors", "NameConflict": "errors",
    "PydockError": "errors", "StartError": "errors", "StoreError": "errors",
    "UsageError": "errors",
    "ContainerSpec": "models", "ExecResult": "models", "ExitStatus": "models",
    "Image": "models", "ImageConfig": "models", "ImageRef": "models", "Mount": "models",
    "RunOptions": "spec",
    "Store": "store",
}

__all__ = [
    "Backend", "Capabilities", "Container", "ContainerError", "ContainerNotFound",
    "ContainerSpec", "DockerfileError", "EngineUnavailable", "ExecError", "ExecResult",
    "ExitStatus", "Image", "ImageConfig", "ImageNotFound", "ImageRef", "InvalidState",
    "LayerError", "Mount", "NameConflict", "NativeBackend", "NativeContainer", "PydockError",
    "RunOptions", "StartError", "Status", "Store", "StoreError", "UsageError",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pydock' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from .backends.base import Backend, Capabilities, Container, Status
    from .backends.native.backend import NativeBackend, NativeContainer
    from .errors import (
        ContainerError,
        ContainerNotFound,
        DockerfileError,
        EngineUnavailable,
        ExecError,
        ImageNotFound,
        InvalidState,
        LayerError,
        NameConflict,
        PydockError,
        StartError,
        StoreError,
        UsageError,
    )
    from .models import ContainerSpec, ExecResult, ExitStatus, Image, ImageConfig, ImageRef, Mount
    from .spec import RunOptions
    from .store import Store
