"""DockerBackend: create, find, list and clean up labelled containers of a Docker Engine."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import IO, Any

from ...errors import ContainerNotFound, ImageNotFound, PydockError, UsageError
from ...models import Image, ImageConfig, ImageRef
from ...procs import proc_start_time, process_label
from ...spec import RunOptions, make_spec
from ..base import Capabilities
from .client import Endpoint, api_errors, connect, resolve_endpoint
from .container import DockerContainer
from .options import config_changes, create_args

LABEL = "pydock"  # "1" on everything pydock creates in a Docker Engine
SESSION_LABEL = "pydock.session"  # "<pid>:<start time>" of the process that owns it
CLOSE_TRIES = 4  # close() removes a session's containers, tried again while some remain
HOST_LABEL = "pydock.host"  # the machine of that process (only its own sweep judges it)
_OWN = object()


def _host() -> str:
    return os.uname().nodename


def image_of(doc: dict[str, Any]) -> Image:
    """A pydock Image from ``docker image inspect`` output."""
    return Image(
        id=doc["Id"],
        config=ImageConfig.from_oci(doc.get("Config")),
        diff_ids=tuple((doc.get("RootFS") or {}).get("Layers") or ()),
        created=doc.get("Created") or "",
        tags=tuple(doc.get("RepoTags") or ()),
        architecture=doc.get("Architecture") or "amd64",
        os=doc.get("Os") or "linux",
        size=int(doc.get("Size") or 0),
    )


class DockerBackend:
    """Containers of a Docker Engine behind pydock's Backend protocol.

    ``client``: a ``docker.APIClient`` (or ``DockerClient``) to use; else one is made for
    ``base_url``, DOCKER_HOST or the current docker context.  ``session_label``: the value of
    the ``pydock.session`` label put on every container (default: this process, so that
    ``close()`` removes them and the next session's sweep removes them if this process dies
    first); None for containers that must outlive the process (``pydock run -d``, kept test
    containers).
    """

    name = "docker"

    def __init__(self, client: Any = None, *, base_url: str | None = None,
                 session_label: str | None | object = _OWN) -> None:
        if client is not None:
            self.api = getattr(client, "api", client)
            self.endpoint = Endpoint(str(self.api.base_url), source="client")
        else:
            self.endpoint = resolve_endpoint(base_url)
            self.api = connect(self.endpoint)
        self.session_label: str | None = (process_label() if session_label is _OWN
                                          else session_label)  # type: ignore[assignment]
        self.capabilities = Capabilities(netns_access=self.endpoint.local and os.geteuid() == 0,
                                         network_faults=self.endpoint.local
                                         and os.geteuid() == 0)
        self._swept = False
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[bool]] = []
        self._dangling: list[str] = []  # images committed without a name: removed at close

    def __repr__(self) -> str:
        return f"<DockerBackend {self.endpoint.base_url}>"

    def __enter__(self) -> DockerBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- images -----------------------------------------------------------------------------
    def image(self, ref: str) -> Image:
        """An image of the daemon; ``pydock:host`` is made from this host when the daemon
        lacks it or it is out of date (see hostimage.py)."""
        from .hostimage import host_image, is_host_ref
        if is_host_ref(ref):
            return host_image(self)
        with api_errors(f"image {ref}", image=ref):
            return image_of(self.api.inspect_image(ref))

    def import_tar(self, fileobj: IO[bytes], *, config: ImageConfig | None = None,
                   ref: str | None = None) -> Image:
        """A rootfs tarball as an image in the daemon (``docker import``), with ``config``.

        The same tarball and config give the existing image back: every xdist worker may
        call this, one imports (the import's comment records the tarball's digest)."""
        config = config or ImageConfig()
        if ref is not None:
            ImageRef.parse(ref)
        data = fileobj.read()
        changes = config_changes(config)
        key = hashlib.sha256(data + json.dumps(changes).encode()).hexdigest()
        comment = f"pydock import sha256:{key}"
        from filelock import FileLock
        lock = os.path.join(tempfile.gettempdir(), f"pydock-docker-import-{key[:16]}.lock")
        with FileLock(lock):
            if ref is not None:
                try:
                    with api_errors(f"image {ref}", image=ref):
                        doc = self.api.inspect_image(ref)
                    if doc.get("Comment") == comment:
                        return image_of(doc)
                except ImageNotFound:
                    pass
            image_id = self._import(data, changes, comment, ref)
        return self.image(ref or image_id)

    def import_stream(self, chunks: Iterable[bytes], *, changes: list[str], comment: str,
                      ref: str) -> str:
        """A rootfs tar sent in ``chunks`` (a chunked upload: never whole in memory) as the
        image ``ref`` with the ``docker import --change`` lines ``changes``; its id."""
        return self._import(chunks, changes, comment, ref)

    def _import(self, data: bytes | Iterable[bytes], changes: list[str], comment: str,
                ref: str | None) -> str:
        """POST /images/create?fromSrc=- with a message (docker-py's import_image has none)."""
        params: dict[str, Any] = {"fromSrc": "-", "message": comment, "changes": changes}
        if ref is not None:
            parsed = ImageRef.parse(ref)
            params.update(repo=parsed.name, tag=parsed.tag)
        url = f"{self.api.base_url}/v{self.api.api_version}/images/create"
        with api_errors(f"import {ref or 'image'}", image=ref):
            import docker.errors
            import requests
            res = self.api.post(url, params=params, data=data,
                                headers={"Content-Type": "application/tar"}, timeout=None)
            try:
                res.raise_for_status()
            except requests.HTTPError as exc:
                docker.errors.create_api_error_from_http_exception(exc)
        last: dict[str, Any] = {}
        for line in res.text.splitlines():
            if line.strip():
                last = json.loads(line)
                if "error" in last:
                    raise UsageError(f"docker: import {ref or 'image'}: {last['error']}")
        status = str(last.get("status", ""))
        if not status.startswith("sha256:"):
            raise PydockError(f"docker: import {ref or 'image'}: unexpected answer {last}")
        return status

    def build(self, context: str | os.PathLike[str], *, dockerfile: str | None = None,
              target: str | None = None, build_args: Mapping[str, str] | None = None,
              tag: str | None = None, no_cache: bool = False,
              progress: Callable[[int, int, str], None] | None = None) -> Image:
        """Build ``context`` on the daemon's builder (see build.py); ``progress(number,
        total, text)`` hears of each step."""
        from .build import build
        return build(self, os.fspath(context), dockerfile=dockerfile, target=target,
                     build_args=build_args, tag=tag, no_cache=no_cache, progress=progress)

    def pull(self, ref: str) -> Image:
        """``ref`` pulled by the daemon (its registries, its credentials); an image the
        daemon already has under that name is not fetched again."""
        try:
            return self.image(ref)
        except ImageNotFound:
            pass
        parsed = ImageRef.parse(ref)
        with api_errors(f"pull {ref}", image=ref):
            self.api.pull(parsed.name, tag=parsed.tag)
        return self.image(ref)

    def remove_image(self, ref: str) -> None:
        with api_errors(f"remove image {ref}", image=ref):
            self.api.remove_image(ref)

    # -- networks ---------------------------------------------------------------------------
    def create_network(self, name: str, *, subnet: str | None = None,
                       labels: Mapping[str, str] | None = None) -> DockerNetwork:
        """A user-defined bridge network (containers on it reach each other by name and
        alias), labelled like everything this backend makes (``close``/``sweep`` remove it)."""
        all_labels = {**(labels or {}), LABEL: "1", HOST_LABEL: _host()}
        if self.session_label is not None:
            all_labels[SESSION_LABEL] = self.session_label
        ipam = None
        if subnet is not None:
            import docker.types
            ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
        with api_errors(f"create network {name}"):
            doc = self.api.create_network(name, driver="bridge", labels=all_labels, ipam=ipam,
                                          check_duplicate=True)
        return DockerNetwork(id=str(doc["Id"]), name=name)

    def remove_network(self, ref: str) -> None:
        with api_errors(f"remove network {ref}"):
            self.api.remove_network(ref)

    # -- containers -------------------------------------------------------------------------
    def create(self, image: str | Image, options: RunOptions | None = None,
               **kw: Any) -> DockerContainer:
        """Create (not start) a container from ``image`` with RunOptions or keywords (the
        native backend's); options this backend cannot honour raise UsageError."""
        try:
            opts = options or RunOptions(**kw)
        except TypeError as exc:
            raise UsageError(f"unknown container option: {exc}") from None
        self._sweep_once()
        ref = image if isinstance(image, str) else image.id
        img = image if isinstance(image, Image) else self.image(image)
        # pydock's own checks first, so that both backends refuse bad input alike.
        check = replace(opts, mounts=opts.mounts if self.endpoint.local else (),
                        network="none" if opts.network.startswith("container:")
                        else opts.network)
        spec = make_spec(img, check, container_id="0" * 64)
        args = create_args(opts, self._labels(opts.labels or {}), ports=spec.ports)
        with api_errors(f"create container from {ref}", image=ref):
            host = self.api.create_host_config(**args.host)
            cid = self.api.create_container(ref, host_config=host, **args.container)["Id"]
            doc = self.api.inspect_container(cid)
        return DockerContainer(self, cid, doc)

    def run(self, image: str | Image, options: RunOptions | None = None,
            **kw: Any) -> DockerContainer:
        """Create and start a container; the caller removes it (or use it as a context)."""
        c = self.create(image, options, **kw)
        try:
            c.start()
        except BaseException:
            c.remove(force=True)
            raise
        return c

    def _labels(self, given: Mapping[str, str]) -> dict[str, str]:
        labels = {**given, LABEL: "1", HOST_LABEL: _host()}
        if self.session_label is not None and SESSION_LABEL not in given:
            labels[SESSION_LABEL] = self.session_label
        return labels

    def container(self, ref: str) -> DockerContainer:
        """A container pydock created (label ``pydock=1``), by name or id."""
        with api_errors(f"container {ref}", container=ref):
            doc = self.api.inspect_container(ref)
        if (doc.get("Config", {}).get("Labels") or {}).get(LABEL) != "1":
            raise ContainerNotFound(ref)
        return DockerContainer(self, doc["Id"], doc)

    def containers(self, *, all: bool = False) -> list[DockerContainer]:
        with api_errors("list containers"):
            found = self.api.containers(all=all, filters={"label": f"{LABEL}=1"})
        return [DockerContainer(self, c["Id"]) for c in found]

    # -- cleanup ----------------------------------------------------------------------------
    def remove_later(self, c: DockerContainer) -> None:
        """Remove ``c`` (force) in a background thread; ``close`` waits for it."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=2,
                                                thread_name_prefix="pydock-docker-rm")
            self._pending = [f for f in self._pending if not f.done()]
            self._pending.append(self._pool.submit(_quietly, partial(c.remove, force=True)))

    def forget_image_at_close(self, image_id: str) -> None:
        self._dangling.append(image_id)

    def close(self) -> None:
        """Finish background removals; remove this session's containers and networks (label
        ``pydock.session``) and the unnamed images it committed."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        if self.session_label is not None:
            label = f"{SESSION_LABEL}={self.session_label}"
            _until_done(lambda: bool(self._remove_labelled(label)[1]))
        left = list(self._dangling)  # (one a container still used, a commit of a commit)

        def remove_images() -> bool:
            left[:] = [i for i in left if not _quietly(partial(self.api.remove_image, i))
                       and self._has_image(i)]
            return bool(left)

        _until_done(remove_images)
        self._dangling.clear()

    def _has_image(self, image_id: str) -> bool:
        try:
            self.api.inspect_image(image_id)
        except Exception:  # noqa: BLE001 - gone (or the daemon is): nothing to try again
            return False
        return True

    def _remove_labelled(self, label: str) -> tuple[list[str], list[str]]:
        """Remove containers and networks with ``label``: (removed ids, ids of the
        containers whose removal failed)."""
        removed, failed = [], []
        with api_errors("list containers"):
            found = self.api.containers(all=True, filters={"label": [f"{LABEL}=1", label]})
        for c in found:
            if _quietly(partial(self.api.remove_container, c["Id"], force=True, v=True)):
                removed.append(c["Id"])
            else:
                failed.append(c["Id"])
        with api_errors("list networks"):
            nets = self.api.networks(filters={"label": [f"{LABEL}=1", label]})
        for n in nets:
            _quietly(partial(self.api.remove_network, n["Id"]))
        return removed, failed

    def sweep(self) -> list[str]:
        """Remove containers and networks that sessions on this machine left when they died
        (their ``pydock.session`` process is gone); returns the removed container ids."""
        self._swept = True
        host = f"{HOST_LABEL}={_host()}"
        with api_errors("list containers"):
            found = self.api.containers(all=True, filters={"label": [f"{LABEL}=1", host]})
            nets = self.api.networks(filters={"label": [f"{LABEL}=1", host]})
        dead: set[str] = set()
        for obj in [*found, *nets]:
            label = (obj.get("Labels") or {}).get(SESSION_LABEL, "")
            pid, _, start = label.partition(":")
            if label and start != "None" and (  # "None": made where /proc is missing
                    not pid.isdigit() or str(proc_start_time(int(pid))) != start):
                dead.add(label)
        removed: list[str] = []
        for label in sorted(dead):
            removed += self._remove_labelled(f"{SESSION_LABEL}={label}")[0]
        return removed

    def _sweep_once(self) -> None:
        if not self._swept:
            self.sweep()


@dataclass(frozen=True)
class DockerNetwork:
    """A network in the daemon (what ``create_network`` returns)."""

    id: str
    name: str


def _until_done(attempt: Callable[[], bool]) -> None:
    """Run a cleanup ``attempt`` (True: something is left) up to CLOSE_TRIES times, a
    little longer apart each time.  A removal the daemon failed (a kill it gave up waiting
    for under load, one still in progress) is tried again: a CI run once found one left."""
    for n in range(CLOSE_TRIES):
        if not attempt():
            return
        if n + 1 < CLOSE_TRIES:
            time.sleep(0.5 * (n + 1))


def _quietly(fn: Callable[[], object]) -> bool:
    """Run a best-effort cleanup step: True when it worked."""
    try:
        fn()
        return True
    except Exception:  # noqa: BLE001 - cleanup goes on with the next object
        return False
