"""One repository of a registry, over the OCI distribution API: manifests and blobs."""

from __future__ import annotations

import hashlib
import io
import urllib.parse
from collections.abc import Callable
from typing import IO

from ..errors import RegistryError
from .manifest import ACCEPT, MAX_MANIFEST, Descriptor
from .reference import RegistryRef
from .transport import _NETWORK_ERRORS, Response, Transport

_CHUNK = 1 << 20


class Repository:
    """``/v2/<repository>/...`` of one registry (the transport keeps the auth state)."""

    def __init__(self, ref: RegistryRef, *, insecure: bool = False,
                 transport: Transport | None = None) -> None:
        self.ref = ref
        self.transport = transport or Transport(ref.domain, insecure=insecure)
        self._path = f"/v2/{ref.repository}"
        self.pull_scope = f"repository:{ref.repository}:pull"
        self.push_scope = f"repository:{ref.repository}:pull,push"
        self.scope = self.pull_scope

    def for_push(self) -> Repository:
        self.scope = self.push_scope
        return self

    def _fail(self, response: Response, what: str, *, missing: str = "") -> RegistryError:
        detail = response.error_text()
        if response.status == 404 and missing:
            return RegistryError(f"{what}: {missing} in registry {self.ref.domain}"
                                 f"{' (' + detail + ')' if detail else ''}", status=404)
        reason = f"HTTP {response.status}{': ' + detail if detail else ''}"
        return RegistryError(f"{what}: registry {self.ref.domain} answered {reason}",
                             status=response.status)

    # -- manifests ---------------------------------------------------------------------------

    def get_manifest(self, reference: str, what: str) -> tuple[bytes, str, str]:
        """The manifest ``reference`` (tag or digest): its bytes, content type and digest."""
        url = f"{self._path}/manifests/{reference}"
        with self.transport.request("GET", url, scope=self.scope,
                                    headers={"Accept": ACCEPT}) as response:
            if response.status != 200:
                missing = (f"manifest {reference} not found" if reference.startswith("sha256:")
                           else f"tag {reference!r} not found")
                raise self._fail(response, what, missing=missing)
            data = _read_limited(response, MAX_MANIFEST, f"{what}: manifest")
            content_type = response.headers.get("Content-Type", "")
            announced = response.headers.get("Docker-Content-Digest", "")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        expected = reference if reference.startswith("sha256:") else announced
        if expected.startswith("sha256:") and expected != digest:
            raise RegistryError(f"{what}: manifest digest mismatch: expected {expected}, "
                                f"got {digest} (refused)")
        return data, content_type, digest

    def put_manifest(self, reference: str, data: bytes, media_type: str, what: str) -> str:
        """Upload a manifest under a tag or its digest; returns its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        url = f"{self._path}/manifests/{reference}"
        with self.transport.request("PUT", url, scope=self.scope, body=data,
                                    headers={"Content-Type": media_type}) as response:
            if response.status not in (200, 201):
                raise self._fail(response, f"{what}: upload of the manifest")
            announced = response.headers.get("Docker-Content-Digest", "")
        if announced and announced != digest:
            raise RegistryError(f"{what}: the registry stored the manifest as {announced}, "
                                f"expected {digest}")
        return digest

    # -- blobs -------------------------------------------------------------------------------

    def open_blob(self, desc: Descriptor, what: str) -> Response:
        """A GET of the blob ``desc`` (follows redirects to storage hosts)."""
        response = self.transport.request("GET", f"{self._path}/blobs/{desc.digest}",
                                          scope=self.scope)
        if response.status != 200:
            with response:
                raise self._fail(response, what, missing=f"blob {desc.digest} not found")
        return response

    def read_blob(self, desc: Descriptor, limit: int, what: str) -> bytes:
        """A small blob (a config) in memory, its size and digest verified."""
        if desc.size > limit:
            raise RegistryError(f"{what}: {desc.digest} is {desc.size} bytes, over {limit}")
        reader = VerifiedBlob(lambda: self.open_blob(desc, what), desc, what)
        return reader.read()

    def has_blob(self, digest: str, what: str) -> bool:
        with self.transport.request("HEAD", f"{self._path}/blobs/{digest}",
                                    scope=self.scope) as response:
            if response.status == 200:
                return True
            if response.status == 404:
                return False
            raise self._fail(response, f"{what}: check of blob {digest}")

    def upload_blob(self, fileobj: IO[bytes], desc: Descriptor, what: str) -> None:
        """Upload a blob: POST opens an upload session, one PUT ``?digest=`` sends it all."""
        start = f"{self._path}/blobs/uploads/"
        with self.transport.request("POST", start, scope=self.scope) as response:
            if response.status != 202 or not response.headers.get("Location"):
                raise self._fail(response, f"{what}: start of the upload of {desc.digest}")
            location = urllib.parse.urljoin(response.url, response.headers["Location"])
        sep = "&" if urllib.parse.urlsplit(location).query else "?"
        url = f"{location}{sep}digest={urllib.parse.quote(desc.digest)}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)}
        with self.transport.request("PUT", url, scope=self.scope, headers=headers,
                                    body=fileobj) as response:
            if response.status != 201:
                raise self._fail(response, f"{what}: upload of {desc.digest}")


class VerifiedBlob(io.RawIOBase):
    """A blob download, opened on the first read, whose size and digest are checked: at EOF
    a mismatch raises ``RegistryError`` (so a consumer reading to the end sees it)."""

    def __init__(self, opener: Callable[[], Response], desc: Descriptor, what: str) -> None:
        self._opener = opener
        self._desc = desc
        self._what = what
        self._response: Response | None = None
        self._hash = hashlib.sha256()
        self._count = 0
        self._done = False
        self.on_eof: Callable[[], None] | None = None

    @property
    def opened(self) -> bool:
        return self._response is not None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._done:
            return 0
        if self._response is None:
            self._response = self._opener()
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._desc.size - self._count + 1)
        try:
            data = self._response.read(want) if want > 0 else b""
        except _NETWORK_ERRORS as exc:
            raise RegistryError(f"{self._what}: download of {self._desc.digest} failed: "
                                f"{exc or type(exc).__name__}") from exc
        self._hash.update(data)
        self._count += len(data)
        if self._count > self._desc.size:
            self._finish()
        if not data:
            self._finish()
            return 0
        view[: len(data)] = data
        return len(data)

    def _finish(self) -> None:
        self._done = True
        if self._response is not None:
            self._response.close()
        digest = "sha256:" + self._hash.hexdigest()
        if self._count != self._desc.size or digest != self._desc.digest:
            raise RegistryError(
                f"{self._what}: digest mismatch for blob {self._desc.digest}: got {digest} "
                f"({self._count} bytes, expected {self._desc.size}); refused"
            )
        if self.on_eof is not None:
            self.on_eof()

    def drain(self) -> None:
        """Read to the end (verifying)."""
        while self.read(_CHUNK):
            pass

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
        super().close()


def _read_limited(response: Response, limit: int, what: str) -> bytes:
    data = response.read(limit + 1)
    if len(data) > limit:
        raise RegistryError(f"{what} is larger than {limit} bytes")
    return data

