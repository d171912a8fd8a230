"""Where the Docker Engine is (DOCKER_HOST, the current docker context) and its errors
translated into pydock's exception tree at this boundary."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ...errors import (
    ContainerError,
    ContainerNotFound,
    EngineUnavailable,
    ImageNotFound,
    InvalidState,
    NameConflict,
    PydockError,
    StartError,
    UsageError,
)

DEFAULT_HOST = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class Endpoint:
    """A Docker Engine's address, its TLS settings and where that choice came from."""

    base_url: str
    tls: Any = None  # docker.tls.TLSConfig, True, or None
    source: str = "default"

    @property
    def local(self) -> bool:
        """A daemon on this machine's kernel (its container PIDs are host PIDs here)."""
        return self.base_url.startswith(("unix://", "http+unix://", "http+docker://"))


def resolve_endpoint(base_url: str | None = None,
                     environ: Mapping[str, str] | None = None) -> Endpoint:
    """``base_url`` if given, else DOCKER_HOST (with DOCKER_TLS_VERIFY / DOCKER_CERT_PATH),
    else the docker context named by DOCKER_CONTEXT or the CLI config's ``currentContext``,
    else the default socket: the docker CLI's order."""
    env = os.environ if environ is None else environ
    if base_url:
        return Endpoint(base_url, source="base_url")
    from docker.utils import kwargs_from_env

    if env.get("DOCKER_HOST"):
        kw = kwargs_from_env(environment=dict(env))
        return Endpoint(kw.get("base_url") or env["DOCKER_HOST"], kw.get("tls"),
                        source="DOCKER_HOST")
    name = env.get("DOCKER_CONTEXT")
    from docker.context import ContextAPI
    from docker.context.config import get_current_context_name

    name = name or get_current_context_name()
    if name and name != "default":
        try:
            ctx = ContextAPI.get_context(name)
        except Exception as exc:  # noqa: BLE001 - a broken context file
            raise EngineUnavailable(f"docker context {name!r} cannot be read: {exc}") from exc
        if ctx is None or not ctx.Host:
            raise EngineUnavailable(
                f"docker context {name!r} does not exist or has no docker endpoint "
                "(see `docker context ls`)")
        return Endpoint(ctx.Host, ctx.TLSConfig or None, source=f"context {name}")
    return Endpoint(DEFAULT_HOST)


def connect(endpoint: Endpoint, *, timeout: float = 60) -> Any:
    """A ``docker.APIClient`` for the endpoint, with the API version negotiated (one round
    trip, which also tells whether a daemon answers)."""
    try:
        import docker
    except ImportError as exc:
        raise EngineUnavailable(
            "the docker backend needs the docker package: pip install 'pytest-pydock[docker]'"
        ) from exc
    try:
        return docker.APIClient(base_url=endpoint.base_url, tls=endpoint.tls or False,
                                version="auto", timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - docker-py wraps every failure differently
        raise EngineUnavailable(
            f"no Docker daemon at {endpoint.base_url} ({endpoint.source}): {_reason(exc)}; "
            "start dockerd, or point DOCKER_HOST or the docker context at a running one"
        ) from exc


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "No such file or directory", "Permission denied",
                   "timed out", "Name or service not known"):
        if marker in text:
            return marker.lower()
    return text


@contextmanager
def api_errors(what: str, *, container: str | None = None,
               image: str | None = None) -> Iterator[None]:
    """Translate docker-py and requests errors raised inside into pydock's tree
    (``raise ... from``); ``what`` says what was being done, for the message."""
    try:
        yield
    except PydockError:
        raise
    except Exception as exc:
        mapped = translate(exc, what=what, container=container, image=image)
        if mapped is None:
            raise
        raise mapped from exc


def translate(exc: BaseException, *, what: str, container: str | None = None,
              image: str | None = None) -> BaseException | None:
    """pydock's exception for a docker-py / requests one (None: not a foreign error)."""
    import docker.errors as de
    import requests.exceptions as rq

    if isinstance(exc, de.APIError):
        text = str(exc.explanation or exc)
        status = exc.status_code
        low = text.lower()
        if isinstance(exc, de.ImageNotFound) or (status == 404 and "no such image" in low):
            missing = ImageNotFound(image or _quoted(text) or "?")
            missing.args = (f"image not found: {missing.ref} (see `docker images`)",)
            return missing
        if status == 404 and container is not None and "no such container" in low:
            return ContainerNotFound(container)
        if status == 409 and "already in use" in low:
            return NameConflict(f"docker: {what}: {text}")
        if status in (304, 409):
            return InvalidState(f"docker: {what}: {text}")
        if what.startswith("start"):  # the runtime's failure: 400 or 500, by version
            return StartError(f"docker: {what}: {text}", exit_code=_start_exit_code(low))
        if status == 400:
            return UsageError(f"docker: {what}: {text}")
        return ContainerError(f"docker: {what}: {text}")
    if isinstance(exc, (rq.ReadTimeout,)) or (
            isinstance(exc, rq.ConnectionError) and "timed out" in str(exc).lower()):
        return TimeoutError(f"docker: {what}: timed out")
    if isinstance(exc, (rq.ConnectionError, de.DockerException)):
        return EngineUnavailable(f"docker: {what}: the Docker daemon is not reachable: "
                                 f"{_reason(exc)}")
    return None


def _start_exit_code(text: str) -> int:
    """docker run's status when the command cannot be run: 127 not found, 126 not
    executable, else 125."""
    if "executable file not found" in text or "no such file or directory" in text:
        return 127
    if "permission denied" in text:
        return 126
    return 125


def _quoted(text: str) -> str | None:
    """The name in ``No such image: busybox:latest``."""
    head, sep, tail = text.partition(": ")
    return tail.strip() if sep else None
