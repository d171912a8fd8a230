"""The one exception tree of pydock.

::

    PydockError                     everything pydock raises on purpose
     +-- UsageError                 a bad option value or argument (the caller's mistake)
     +-- StoreError                 the image store cannot be read or written
     |    +-- ImageNotFound         no image by that name, tag or id
     |    +-- LayerError            a layer archive is corrupt or escapes the layer
     |    +-- ArchiveError          an image archive (docker save, OCI layout) is bad or unsafe
     |    +-- HostViewError         no host base image here, or a host layer asked to be exported
     +-- DockerfileError            a Dockerfile (or --change line) does not parse
     +-- RegistryError              a registry request failed (names the ref, registry, status)
     +-- BuildError                 a build step failed (names the Dockerfile line; RUN output)
     +-- ContainerError             a container operation failed
     |    +-- ContainerNotFound     no container by that name or id
     |    +-- NameConflict          the name is taken by another container
     |    +-- InvalidState          e.g. start of a running container, rm of a running one
     |    +-- StartError            the container could not be started (names the setup step)
     |    +-- ExecError             exec into a container failed before the command ran
     +-- NetworkError               a network operation failed (port mapping, nft, fault)
     |    +-- PortAllocated         the asked host port is taken (Docker's wording)
     |    +-- NetworkNotFound       no network by that name or id (also a UsageError)
     +-- EngineUnavailable          no usable engine: native cannot run here, or no Docker daemon

Every message names the image, container, file or option concerned and, where there is one,
the fix.  The CLI prints ``pydock: error: <message>`` and exits non-zero; it never shows a
traceback for a ``PydockError``.
"""

from __future__ import annotations


class PydockError(Exception):
    """Base of every error pydock raises on purpose."""

    exit_code = 1


class UsageError(PydockError):
    """A bad argument or option value."""

    exit_code = 2


class StoreError(PydockError):
    """The image store cannot be read or written."""


class ImageNotFound(StoreError):
    """No image by that reference."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"image not found: {ref} (see `pydock images`)")
        self.ref = ref


class LayerError(StoreError):
    """A layer archive is corrupt or has an entry escaping the layer."""


class ArchiveError(StoreError):
    """An image archive (``docker save`` output, an OCI image layout tar) is corrupt,
    incomplete, inconsistent with its digests or has an entry escaping the archive."""


class HostViewError(StoreError):
    """The host base image (pydock:host) cannot be made on this host (says why), or one of
    its layers, a view of the host's own files, was asked to be exported or copied."""


class DockerfileError(PydockError):
    """A Dockerfile or a --change instruction does not parse (or a variable does not expand).

    ``DockerfileError("reason")`` is a bare message.  With ``path`` and ``line`` the message reads
    ``"<path>:<line>: <instruction>: <reason>"`` and, given the ``source`` line and a ``span``
    (start, end) within it, a caret line under the bad part, as pypa/packaging's
    ``ParserSyntaxError`` draws it.  ``reason`` keeps the bare message for re-raising elsewhere.
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str | None = None,
        line: int | None = None,
        instruction: str | None = None,
        source: str | None = None,
        span: tuple[int, int] | None = None,
    ) -> None:
        self.reason = reason
        self.path = path
        self.line = line
        self.instruction = instruction
        self.source = source
        self.span = span
        super().__init__(self._render())

    def _render(self) -> str:
        if self.path is None:
            return self.reason
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        head = f"{where}: {self.instruction}: " if self.instruction else f"{where}: "
        text = head + self.reason
        if self.source is not None and self.span is not None and "\n" not in self.source:
            start, end = self.span
            text += f"\n    {self.source}\n    {' ' * start}{'~' * max(end - start - 1, 0)}^"
        return text

    def located(
        self,
        *,
        path: str,
        line: int,
        instruction: str | None,
        source: str | None = None,
        span: tuple[int, int] | None = None,
    ) -> DockerfileError:
        """The same reason placed at ``path:line`` (keeps an existing location)."""
        if self.path is not None:
            return self
        return DockerfileError(self.reason, path=path, line=line, instruction=instruction,
                               source=source, span=span)


class BuildError(PydockError):
    """A build step failed: ``path:line: INSTRUCTION: reason``, and for a RUN its exit code
    and the last lines of its output (``output``)."""

    def __init__(self, reason: str, *, path: str | None = None, line: int | None = None,
                 instruction: str | None = None, exit_code: int | None = None,
                 output: str = "") -> None:
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        text = f"{where}{instruction}: {reason}" if instruction else f"{where}{reason}"
        super().__init__(text)
        self.reason = reason
        self.path = path
        self.line = line
        self.instruction = instruction
        self.step_exit_code = exit_code
        self.output = output


class RegistryError(PydockError):
    """A pull or push failed: the message names the reference, the registry and, for an HTTP
    error, its status (also in ``status``)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ContainerError(PydockError):
    """A container operation failed."""


class ContainerNotFound(ContainerError):
    """No container by that name or id."""

    def __init__(self, ref: str) -> None:
        super().__init__(f"no such container: {ref} (see `pydock ps -a`)")
        self.ref = ref


class NameConflict(ContainerError):
    """The container name is in use."""


class InvalidState(ContainerError):
    """The container is not in a state that allows the operation."""


class StartError(ContainerError):
    """The container failed to start; the message names the failing setup step."""

    def __init__(self, message: str, *, exit_code: int = 125) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ExecError(ContainerError):
    """An exec failed before its command ran."""

    def __init__(self, message: str, *, exit_code: int = 126) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NetworkError(PydockError):
    """A network operation failed (port mapping, nftables, traffic control)."""


class PortAllocated(NetworkError):
    """The asked host port is taken: ``Bind for 0.0.0.0:8080 failed: port is already allocated``."""


class NetworkNotFound(NetworkError, UsageError):
    """No network by that name or id (a bad ``--network`` value is the caller's mistake)."""

    exit_code = 1

    def __init__(self, ref: str) -> None:
        super().__init__(f"unknown network {ref!r}: no such network (see `pydock network ls`; "
                         f"create it with `pydock network create {ref}`)")
        self.ref = ref


class EngineUnavailable(PydockError):
    """The native engine cannot run on this host, or no Docker daemon answers; the message
    says what is missing."""
