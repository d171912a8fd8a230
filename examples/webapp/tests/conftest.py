"""Fixtures of the web-app example: the image is built once per session (for all xdist
workers), each test gets a fresh container of it on its own network address."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

APP_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def app_image(pydock):
    """``examples/webapp/Dockerfile`` built from the host base (``FROM pydock:host``)."""
    return pydock.build(APP_DIR, tag="example/notes:dev")


@pytest.fixture
def app(pydock, app_image):
    """A fresh notes service: ready once its /health answers, removed after the test."""
    with pydock.run(app_image, ready=pydock.http(8000, "/health")) as c:
        yield c


class Api:
    """A tiny JSON client for the service."""

    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")


@pytest.fixture
def api(app) -> Api:
    return Api(app.url(8000, "").rstrip("/"))
