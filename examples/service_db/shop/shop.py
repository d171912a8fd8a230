"""A small shop service that keeps its stock in the key-value store (KV_URL).

    GET  /health              {"status": "ok"} once the store answers
    GET  /products/<sku>      {"sku": ..., "name": ..., "stock": n}, or 404
    POST /orders              {"sku": ..., "qty": n} -> 201 {"sku", "qty", "stock_left"};
                              409 when the stock is too low, 404 for an unknown product
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KV_URL = os.environ.get("KV_URL", "http://kv:6380")


def kv(method: str, key: str, value: object = None) -> object:
    data = None if value is None else json.dumps(value).encode()
    req = urllib.request.Request(f"{KV_URL}/kv/{key}", data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw = resp.read()
            return json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


class Handler(BaseHTTPRequestHandler):
    def reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            try:
                urllib.request.urlopen(f"{KV_URL}/health", timeout=2).close()
            except OSError as exc:
                return self.reply(503, {"status": f"kv unreachable: {exc}"})
            return self.reply(200, {"status": "ok"})
        if self.path.startswith("/products/"):
            sku = self.path[len("/products/"):]
            product = kv("GET", f"product:{sku}")
            if product is None:
                return self.reply(404, {"error": f"no product {sku}"})
            return self.reply(200, product)
        self.reply(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        if self.path != "/orders":
            return self.reply(404, {"error": f"no route {self.path}"})
        try:
            order = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            sku, qty = order["sku"], int(order["qty"])
        except (ValueError, KeyError, TypeError):
            return self.reply(400, {"error": 'expected {"sku": ..., "qty": n}'})
        product = kv("GET", f"product:{sku}")
        if product is None:
            return self.reply(404, {"error": f"no product {sku}"})
        if qty < 1 or product["stock"] < qty:
            return self.reply(409, {"error": f"only {product['stock']} left"})
        product["stock"] -= qty
        kv("PUT", f"product:{sku}", product)
        self.reply(201, {"sku": sku, "qty": qty, "stock_left": product["stock"]})

    def log_message(self, format: str, *args: object) -> None:
        print(f"shop: {self.command} {self.path}", flush=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    print(f"shop listening on port {port}, kv at {KV_URL}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
