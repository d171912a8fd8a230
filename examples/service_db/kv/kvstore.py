"""A tiny persistent key-value store over HTTP (standard library only): the stateful
dependency of the service example.

    GET    /health       {"status": "ok"}
    GET    /kv           every key and value
    GET    /kv/<key>     the value (any JSON), or 404
    PUT    /kv/<key>     store the request body (JSON) -> 204
    DELETE /kv/<key>     204, or 404

Every write is saved to DATA_FILE (default /data/kv.json) before it is acknowledged, so a
committed container keeps what was written.
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DATA_FILE = os.environ.get("DATA_FILE", "/data/kv.json")
LOCK = threading.Lock()


def load() -> dict:
    try:
        with open(DATA_FILE) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def save(data: dict) -> None:
    os.makedirs(os.path.dirname(DATA_FILE), exist_ok=True)
    tmp = f"{DATA_FILE}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, DATA_FILE)


class Handler(BaseHTTPRequestHandler):
    def reply(self, status: int, body: object = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def key(self) -> str | None:
        return self.path[len("/kv/"):] if self.path.startswith("/kv/") else None

    def do_GET(self) -> None:
        if self.path == "/health":
            return self.reply(200, {"status": "ok"})
        if self.path == "/kv":
            return self.reply(200, load())
        key = self.key()
        data = load()
        if key is None or key not in data:
            return self.reply(404, {"error": f"no key {key}"})
        self.reply(200, data[key])

    def do_PUT(self) -> None:
        key = self.key()
        if not key:
            return self.reply(404, {"error": f"no route {self.path}"})
        try:
            value = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        except ValueError:
            return self.reply(400, {"error": "the body must be JSON"})
        with LOCK:
            data = load()
            data[key] = value
            save(data)
        self.reply(204)

    def do_DELETE(self) -> None:
        key = self.key()
        with LOCK:
            data = load()
            if key not in data:
                return self.reply(404, {"error": f"no key {key}"})
            del data[key]
            save(data)
        self.reply(204)

    def log_message(self, format: str, *args: object) -> None:
        print(f"kv: {self.command} {self.path}", flush=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "6380"))
    print(f"kv store listening on port {port}, data in {DATA_FILE}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
