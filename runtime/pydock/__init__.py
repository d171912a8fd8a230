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

# Nothing but the standard library's lightest here: every process of pydock imports this
# package first, the zygote factory (backends/native/factory.py) included.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Where each public name lives.  Loaded on first use (PEP 562), so that importing one
# submodule (the monitor process imports only what it needs) does not load them all.
_EXPORTS = {
    "Backend": "backends.base", "Capabilities": "backends.base", "Container": "backends.base",
    "Status": "backends.base",
    "NativeBackend": "backends.native.backend", "NativeContainer": "backends.native.backend",
    "DockerBackend": "backends.docker", "DockerContainer": "backends.docker",
    "ContainerError": "errors", "ContainerNotFound": "errors", "DockerfileError": "errors",
    "EngineUnavailable": "errors", "ExecError": "errors", "ImageNotFound": "errors",
    "InvalidState": "errors", "LayerError": "errors", "NameConflict": "errors",
    "PydockError": "errors", "StartError": "errors", "StoreError": "errors",
    "UsageError": "errors",
    "ContainerSpec": "models", "ExecResult": "models", "ExitStatus": "models",
    "Image": "models", "ImageConfig": "models", "ImageRef": "models", "Mount": "models",
    "PortSpec": "models", "NetworkError": "errors", "PortAllocated": "errors",
    "RunOptions": "spec",
    "Store": "store",
    "BuildError": "errors", "BuildOptions": "builder", "BuildReporter": "builder",
    "BuildResult": "builder", "build": "builder",
    "RegistryError": "errors", "Progress": "sources.registry", "pull": "sources.registry",
    "push": "sources.registry", "push_index": "sources.registry",
    "ArchiveError": "errors", "LoadedImage": "sources.archives",
    "load_images": "sources.archives", "save_images": "sources.archives",
    "HostViewError": "errors", "host_image": "sources.host",
}

__all__ = [
    "Backend", "Capabilities", "Container", "ContainerError", "ContainerNotFound",
    "ContainerSpec", "DockerfileError", "EngineUnavailable", "ExecError", "ExecResult",
    "ExitStatus", "Image", "ImageConfig", "ImageNotFound", "ImageRef", "InvalidState",
    "LayerError", "Mount", "NameConflict", "NativeBackend", "NativeContainer", "PydockError",
    "RunOptions", "StartError", "Status", "Store", "StoreError", "UsageError",
    "BuildError", "BuildOptions", "BuildReporter", "BuildResult", "build",
    "Progress", "RegistryError", "pull", "push", "push_index",
    "DockerBackend", "DockerContainer",
    "ArchiveError", "LoadedImage", "load_images", "save_images",
    "HostViewError", "host_image",
    "NetworkError", "PortAllocated", "PortSpec",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pydock' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from .backends.base import Backend, Capabilities, Container, Status
    from .backends.docker import DockerBackend, DockerContainer
    from .backends.native.backend import NativeBackend, NativeContainer
    from .builder import BuildOptions, BuildReporter, BuildResult, build
    from .errors import (
        ArchiveError,
        BuildError,
        ContainerError,
        ContainerNotFound,
        DockerfileError,
        EngineUnavailable,
        ExecError,
        HostViewError,
        ImageNotFound,
        InvalidState,
        LayerError,
        NameConflict,
        NetworkError,
        PortAllocated,
        PydockError,
        RegistryError,
        StartError,
        StoreError,
        UsageError,
    )
    from .models import (
        ContainerSpec,
        ExecResult,
        ExitStatus,
        Image,
        ImageConfig,
        ImageRef,
        Mount,
        PortSpec,
    )
    from .sources.archives import LoadedImage, load_images, save_images
    from .sources.host import host_image
    from .sources.registry import Progress, pull, push, push_index
    from .spec import RunOptions
    from .store import Store
