"""Fixtures of the service + database example.

Seed once, fork per test: ``seeded_kv`` starts the key-value store once per session, loads
the catalogue into it and commits the container to an image; every test then runs a fresh
store from that image (with the seeded data and nothing else) and a fresh shop next to it on
a network of its own, where the shop reaches the store by the name ``kv``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1]

CATALOGUE = {
    "product:apple": {"sku": "apple", "name": "Apple", "stock": 5},
    "product:pear": {"sku": "pear", "name": "Pear", "stock": 1},
}


def call(base: str, method: str, path: str, body: object = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


@pytest.fixture(scope="session")
def kv_image(pydock):
    return pydock.build(HERE / "kv", tag="example/kv:dev")


@pytest.fixture(scope="session")
def shop_image(pydock):
    return pydock.build(HERE / "shop", tag="example/shop:dev")


@pytest.fixture(scope="session")
def seeded_kv(pydock, kv_image):
    """The store with the catalogue loaded, as an image: seeded once per session."""
    with pydock.run(kv_image, ready=pydock.http(6380, "/health")) as kv:
        base = kv.url(6380, "").rstrip("/")
        for key, value in CATALOGUE.items():
            assert call(base, "PUT", f"/kv/{key}", value)[0] == 204
        kv.stop()
        return kv.commit()


@pytest.fixture
def services(pydock, seeded_kv, shop_image):
    """A fresh store (forked from the seeded image) and a fresh shop on their own network."""
    net = pydock.network("shop")
    with pydock.run(seeded_kv, network=net, aliases=["kv"],
                    ready=pydock.http(6380, "/health")) as kv, \
            pydock.run(shop_image, network=net, ready=pydock.http(8000, "/health")) as shop:
        yield shop, kv


@pytest.fixture
def shop(services):
    shop, _ = services
    base = shop.url(8000, "").rstrip("/")
    return lambda method, path, body=None: call(base, method, path, body)
