"""The shop and its store, a fresh pair per test: every test starts from the seeded stock."""

from __future__ import annotations

import pytest


def test_product_comes_from_the_store(shop) -> None:
    assert shop("GET", "/products/apple") == (
        200, {"sku": "apple", "name": "Apple", "stock": 5})


def test_unknown_product(shop) -> None:
    assert shop("GET", "/products/kiwi")[0] == 404


@pytest.mark.parametrize("qty", [1, 3, 5])
def test_an_order_takes_from_the_seeded_stock(shop, qty: int) -> None:
    status, order = shop("POST", "/orders", {"sku": "apple", "qty": qty})
    assert status == 201 and order["stock_left"] == 5 - qty  # always from 5: a fresh store
    assert shop("GET", "/products/apple")[1]["stock"] == 5 - qty


def test_out_of_stock_is_a_conflict(shop) -> None:
    assert shop("POST", "/orders", {"sku": "pear", "qty": 1})[0] == 201
    assert shop("POST", "/orders", {"sku": "pear", "qty": 1}) == (409, {"error": "only 0 left"})


def test_the_store_persists_what_the_shop_writes(services, shop) -> None:
    _, kv = services
    shop("POST", "/orders", {"sku": "apple", "qty": 2})
    saved = kv.exec(["python3", "-c", "print(open('/data/kv.json').read())"]).stdout
    assert b'"stock": 3' in saved


def test_the_shop_reaches_the_store_by_name_only_on_its_network(pydock, services) -> None:
    shop, _ = services
    reach = "import urllib.request; urllib.request.urlopen('http://kv:6380/health', timeout=2)"
    assert shop.exec(["python3", "-c", reach]).exit_code == 0
    with pydock.run("pydock:host", ["sleep", "30"]) as outsider:  # default network
        assert outsider.exec(["python3", "-c", reach]).exit_code != 0
