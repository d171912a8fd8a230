"""HTTP to one registry: https or (on loopback, or when allowed) plain http, and its auth flows.

Auth follows Docker: a request answered ``401`` carries a ``WWW-Authenticate`` challenge;
``Basic`` is answered with the user's credentials, ``Bearer`` with a token fetched from the
challenge's realm (anonymously, or with the credentials), cached per scope.  Credentials are
sent only to the registry and its token realm, never along redirects (blob downloads are
often redirected to a storage host).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from email.message import Message
from typing import IO, Any

from ..errors import RegistryError
from .auth import Challenge, Credentials, docker_config_dir, load_credentials
from .reference import api_host, is_loopback

TIMEOUT = 60.0
_USER_AGENT = "pydock/0.1 (OCI distribution client)"
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError, socket.timeout)


class Response:
    """A registry's answer: status, headers, and the body as a stream (close it when done)."""

    def __init__(self, status: int, headers: Message, url: str, body: IO[bytes] | None) -> None:
        self.status = status
        self.headers = headers
        self.url = url
        self._body = body

    def read(self, size: int = -1) -> bytes:
        return self._body.read(size) if self._body is not None else b""

    def close(self) -> None:
        if self._body is not None:
            self._body.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def error_text(self) -> str:
        """The registry's error codes and messages (``MANIFEST_UNKNOWN: manifest unknown``)."""
        try:
            data = self.read(64 << 10)
        except _NETWORK_ERRORS:
            return ""
        try:
            errors = json.loads(data).get("errors") or []
            parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors]
            return "; ".join(p for p in parts if p)
        except (ValueError, AttributeError, TypeError):
            return data.decode(errors="replace").strip()[:200]


class Transport:
    """Requests to the registry ``domain`` (``host[:port]``; ``docker.io`` for Docker Hub)."""

    def __init__(self, domain: str, *, insecure: bool = False,
                 credentials: Credentials | None = None, timeout: float = TIMEOUT) -> None:
        self.domain = domain
        self.host = api_host(domain)
        self.timeout = timeout
        self._plain_allowed = insecure or is_loopback(domain)
        context = ssl.create_default_context()
        if self._plain_allowed:  # Docker's "insecure registry": TLS without verification
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        proxies: dict[str, str] | None = {} if is_loopback(domain) else None
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler(proxies), urllib.request.HTTPSHandler(context=context)
        )
        self._credentials = credentials
        self._credentials_loaded = credentials is not None
        self._base: str | None = None
        self._tokens: dict[str, str] = {}
        self._basic: str | None = None

    # -- public ------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """An absolute URL for ``path`` (``/v2/...``), or ``path`` itself if it is one."""
        return urllib.parse.urljoin(self._base_url() + "/", path)

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | IO[bytes] | None = None,
    ) -> Response:
        """Send a request, answering one auth challenge; a final 401 raises ``RegistryError``."""
        url = self.url(path)
        start = body.tell() if body is not None and not isinstance(body, bytes) else 0
        response = self._send(method, url, headers or {}, body, self._authorization(scope))
        if response.status != 401:
            return response
        challenge = Challenge.parse(response.headers.get("WWW-Authenticate", ""))
        detail = response.error_text()
        response.close()
        if not self._answer(challenge, scope):
            raise self._unauthorized(detail, challenge, scope)
        if body is not None and not isinstance(body, bytes):
            body.seek(start)
        response = self._send(method, url, headers or {}, body, self._authorization(scope))
        if response.status == 401:
            detail = response.error_text()
            response.close()
            raise self._unauthorized(detail, challenge, scope)
        return response

    # -- scheme ------------------------------------------------------------------------------

    def _base_url(self) -> str:
        if self._base is None:
            self._base = f"https://{self.host}"
            if self._plain_allowed and not self._speaks_https():
                self._base = f"http://{self.host}"
        return self._base

    def _speaks_https(self) -> bool:
        """Docker's order for an insecure or loopback registry: https first, then http."""
        request = urllib.request.Request(f"https://{self.host}/v2/", method="GET")
        try:
            with self._opener.open(request, timeout=self.timeout):
                return True
        except urllib.error.HTTPError as exc:
            exc.close()
            return True
        except _NETWORK_ERRORS:
            return False

    # -- sending -----------------------------------------------------------------------------

    def _send(self, method: str, url: str, headers: Mapping[str, str],
              body: bytes | IO[bytes] | None, authorization: str | None) -> Response:
        request = urllib.request.Request(url, data=body, method=method)
        request.add_header("User-Agent", _USER_AGENT)
        for key, value in headers.items():
            request.add_header(key, value)
        if authorization:
            request.add_unredirected_header("Authorization", authorization)
        try:
            raw = self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            return Response(exc.code, exc.headers, url, exc)  # exc.fp closes with exc
        except _NETWORK_ERRORS as exc:
            reason = getattr(exc, "reason", None) or exc
            hint = ""
            if isinstance(reason, ssl.SSLError) and not self._plain_allowed:
                hint = (f" (for a plain-http registry use --insecure-registry "
                        f"{self.domain}, i.e. insecure=True)")
            raise RegistryError(
                f"cannot reach registry {self.domain} ({method} {url}): {reason}{hint}"
            ) from exc
        return Response(raw.status, raw.headers, raw.geturl(), raw)

    # -- auth --------------------------------------------------------------------------------

    def _creds(self) -> Credentials | None:
        if not self._credentials_loaded:
            self._credentials = load_credentials(self.domain)
            self._credentials_loaded = True
        return self._credentials

    def _authorization(self, scope: str) -> str | None:
        token = self._tokens.get(scope)
        if token:
            return f"Bearer {token}"
        return self._basic

    def _answer(self, challenge: Challenge, scope: str) -> bool:
        """Get what the challenge asks for; False when there is nothing (new) to offer."""
        if challenge.scheme == "basic":
            creds = self._creds()
            if creds is None or not creds.username or self._basic is not None:
                return False
            self._basic = creds.basic()
            return True
        if challenge.scheme == "bearer":  # also when a cached token expired: get a new one
            self._tokens[scope] = self._fetch_token(challenge, scope)
            return True
        return False

    def _fetch_token(self, challenge: Challenge, scope: str) -> str:
        realm = challenge.get("realm")
        if not realm:
            raise RegistryError(f"registry {self.domain} asks for a bearer token but names no realm")
        params: list[tuple[str, str]] = []
        if challenge.get("service"):
            params.append(("service", challenge.get("service")))
        for item in _merge_scopes(scope, challenge.get("scope")):
            params.append(("scope", item))
        creds = self._creds()
        headers: dict[str, str] = {}
        body: bytes | None = None
        url = realm
        if creds is not None and creds.identity_token:  # OAuth2 refresh token (docker login)
            form = [*params, ("grant_type", "refresh_token"), ("client_id", "pydock"),
                    ("refresh_token", creds.identity_token)]
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            url = f"{realm}{'&' if '?' in realm else '?'}{urllib.parse.urlencode(params)}"
        auth = creds.basic() if creds is not None and creds.username else None
        with self._send("POST" if body else "GET", url, headers, body, auth) as response:
            if response.status != 200:
                detail = response.error_text()
                raise RegistryError(
                    f"registry {self.domain}: the token server {realm} refused a token for "
                    f"{scope!r} (HTTP {response.status}{': ' + detail if detail else ''})"
                    + (self._login_hint() if response.status in (401, 403) else ""),
                    status=response.status,
                )
            doc = _json(response.read(1 << 20), f"token from {realm}")
        token = doc.get("token") or doc.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError(f"registry {self.domain}: the token server {realm} sent no token")
        return token

    def _login_hint(self) -> str:
        config = docker_config_dir() / "config.json"
        if self._creds() is None:
            return f"; no credentials for {self.domain} in {config} (log in with docker login)"
        return f"; check the credentials for {self.domain} in {config}"

    def _unauthorized(self, detail: str, challenge: Challenge, scope: str) -> RegistryError:
        resource, _, actions = scope.rpartition(":")
        access = f"{actions} access to {resource.partition(':')[2]}"
        creds = self._creds()
        if challenge.scheme not in ("basic", "bearer", ""):
            what = f"asks for unsupported {challenge.scheme!r} authentication"
        elif creds is None:
            what = f"requires authentication for {access}"
        else:
            what = f"refused {access} to {creds.username or 'the identity token'}"
        text = f"registry {self.domain} {what} (HTTP 401{': ' + detail if detail else ''})"
        return RegistryError(text + self._login_hint(), status=401)


def _merge_scopes(*scopes: str) -> list[str]:
    """``repository:a:pull`` and ``repository:a:push,pull`` -> ``repository:a:pull,push``:
    one token for what the operation needs and what the registry asked for."""
    merged: dict[str, list[str]] = {}
    for item in " ".join(scopes).split():
        resource, _, actions = item.rpartition(":")
        have = merged.setdefault(resource, [])
        have.extend(a for a in actions.split(",") if a and a not in have)
    return [f"{resource}:{','.join(actions)}" for resource, actions in merged.items()]


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise RegistryError(f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{what} is not a JSON object")
    return doc
