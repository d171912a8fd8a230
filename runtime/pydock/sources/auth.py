"""Registry credentials from the user's Docker config, and WWW-Authenticate challenges."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RegistryError
from .reference import DOCKER_HUB

# The key `docker login` writes for Docker Hub, and the other spellings found in the wild.
_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")
_PARAM = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or, with ``identity_token``, an OAuth2 refresh token)."""

    username: str
    password: str = ""
    identity_token: str = ""

    def basic(self) -> str:
        """The value of an ``Authorization: Basic`` header."""
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def __repr__(self) -> str:  # never show secrets in tracebacks or logs
        return f"Credentials(username={self.username!r}, password=***)"


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header: ``Bearer realm="...",service="..."``."""

    scheme: str
    params: tuple[tuple[str, str], ...] = ()

    def get(self, key: str) -> str:
        return dict(self.params).get(key, "")

    @classmethod
    def parse(cls, header: str) -> Challenge:
        scheme, _, rest = header.strip().partition(" ")
        params = []
        for key, value in _PARAM.findall(rest):
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params.append((key.lower(), value))
        return cls(scheme.lower(), tuple(params))


def docker_config_dir() -> Path:
    """``$DOCKER_CONFIG``, else ``~/.docker`` (where ``docker login`` keeps credentials)."""
    env = os.environ.get("DOCKER_CONFIG")
    return Path(env) if env else Path.home() / ".docker"


def _server_of(key: str) -> str:
    """``https://host:5000/v1/`` -> ``host:5000``: config keys may be URLs or host names."""
    host = key.split("://", 1)[-1]
    return host.split("/", 1)[0]


def _keys_for(domain: str) -> tuple[str, ...]:
    if domain == DOCKER_HUB:
        return _HUB_KEYS
    return (domain,)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read the Docker config {path}: {exc}") from None
    return doc if isinstance(doc, dict) else {}


def load_credentials(domain: str, *, config_dir: Path | None = None) -> Credentials | None:
    """The credentials the Docker config holds for the registry ``domain`` (host[:port]).

    Reads ``auths`` (what ``docker login`` writes without a credential store) and, when the
    config names one for this registry, asks a credential helper (``docker-credential-*``).
    """
    path = (config_dir or docker_config_dir()) / "config.json"
    doc = _read_config(path)
    keys = _keys_for(domain)
    helper = (doc.get("credHelpers") or {}).get(domain) or doc.get("credsStore")
    if isinstance(helper, str) and helper:
        found = _from_helper(helper, keys[0], path)
        if found is not None:
            return found
    auths = doc.get("auths") or {}
    if not isinstance(auths, dict):
        return None
    wanted = {_server_of(k) for k in keys}
    for key, entry in auths.items():
        if _server_of(str(key)) in wanted and isinstance(entry, dict):
            found = _from_entry(entry, key, path)
            if found is not None:
                return found
    return None


def _from_entry(entry: dict[str, Any], key: str, path: Path) -> Credentials | None:
    token = str(entry.get("identitytoken") or "")
    user, password = str(entry.get("username") or ""), str(entry.get("password") or "")
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise RegistryError(f"{path}: the auth of {key!r} is not base64 of user:password")\
                from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise RegistryError(f"{path}: the auth of {key!r} is not base64 of user:password")
    if not user and not token:
        return None
    return Credentials(user, password, token)


def _from_helper(helper: str, server: str, path: Path) -> Credentials | None:
    program = shutil.which(f"docker-credential-{helper}")
    if program is None:
        return None  # e.g. a config copied from a desktop machine: fall back to auths
    try:
        result = subprocess.run([program, "get"], input=server.encode(), capture_output=True,
                                timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryError(f"credential helper {program} (from {path}) failed: {exc}") from None
    if result.returncode != 0:
        return None  # "credentials not found in native keychain"
    try:
        doc = json.loads(result.stdout)
        user, secret = str(doc["Username"]), str(doc["Secret"])
    except (ValueError, KeyError, TypeError):
        raise RegistryError(f"credential helper {program} gave no credentials for {server}")\
            from None
    if user == "<token>":
        return Credentials("", "", identity_token=secret)
    return Credentials(user, secret)
