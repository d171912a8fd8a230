"""A real registry server (Debian's docker-registry) on 127.0.0.1 for the tests, and a token
server that issues the JWTs the registry's token auth checks (Docker Hub's flow)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import require_service

REGISTRY = shutil.which("docker-registry")
SERVICE = "pydock-test-registry"
ISSUER = "pydock-test-issuer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RegistryServer:
    """A running ``docker-registry serve`` with its storage root and request log."""

    host: str  # 127.0.0.1:PORT
    root: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def blob_file(self, digest: str) -> Path:
        """Where the registry keeps the blob ``digest`` (to corrupt it on purpose)."""
        hexd = digest.removeprefix("sha256:")
        return self.root / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def requests(self, method: str, path: str) -> int:
        """How many ``METHOD path`` requests the access log shows."""
        needle = f'"{method} {path} HTTP/1.1"'
        return self.log.read_text(errors="replace").count(needle)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_registry(workdir: Path, *, auth: str = "") -> RegistryServer:
    """Start a registry on a free loopback port with storage under ``workdir``; ``auth`` is
    the YAML of its ``auth:`` section (indented by 2), if any."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    root = workdir / "storage"
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: pydock-tests\n"
        + (f"auth:\n{auth}" if auth else "")
    )
    log = workdir / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(REGISTRY), "serve", str(config)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = RegistryServer(f"127.0.0.1:{port}", root, log, proc)
    deadline = time.monotonic() + 30
    while True:  # a start-up wait, not an assertion on time
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://{server.host}/v2/", timeout=2).close()
            return server
        except urllib.error.HTTPError:
            return server  # 401: up, and asks for auth
        except OSError as exc:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"docker-registry did not answer ({exc}): "
                                   f"{log.read_text()[-2000:]}") from exc
            time.sleep(0.05)


@pytest.fixture(scope="session", name="registry")
def registry_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry without auth on 127.0.0.1 (plain http), for the whole session."""
    require_service(REGISTRY is not None, "docker-registry (apt-get install docker-registry)")
    server = start_registry(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


# -- token auth ------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """Docker Hub's token flow in small: anonymous users may pull, ``users`` may push too.

    Tokens are RS256 JWTs carrying their self-signed certificate (``x5c``), which the
    registry trusts through its ``rootcertbundle``."""

    workdir: Path
    users: dict[str, str]
    issued: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (user, scopes)

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pydock test token issuer")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self._key, hashes.SHA256()))
        self.cert_file = self.workdir / "token-cert.pem"
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.realm = f"http://127.0.0.1:{self._httpd.server_address[1]}/token"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def auth_yaml(self) -> str:
        return (f"  token:\n    realm: {self.realm}\n    service: {SERVICE}\n"
                f"    issuer: {ISSUER}\n    rootcertbundle: {self.cert_file}\n")

    def _token(self, user: str, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a == "pull" or (a == "push" and user)]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {"iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                user = ""
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if server.users.get(user) != password:
                        self._answer(401, {"details": "incorrect username or password"})
                        return
                scopes = query.get("scope", [])
                server.issued.append((user, tuple(scopes)))
                token = server._token(user, scopes)
                self._answer(200, {"token": token, "access_token": token, "expires_in": 300})

            def _answer(self, status: int, doc: dict[str, object]) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def docker_config(directory: Path, host: str, user: str, password: str) -> Path:
    """A Docker config dir whose config.json holds ``docker login`` credentials for ``host``."""
    directory.mkdir(parents=True, exist_ok=True)
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": pair}}}))
    return directory
