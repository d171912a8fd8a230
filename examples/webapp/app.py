"""A small notes service (standard library only): the web app the example containerizes.

    GET  /health        {"status": "ok"}
    GET  /notes         the notes, oldest first
    POST /notes         {"text": "..."} -> 201 and the new note
    DELETE /notes/<id>  204, or 404 when there is no such note

Notes live in a JSON file (NOTES_FILE, default /data/notes.json), so each container starts
with whatever its image holds and nothing else.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NOTES_FILE = os.environ.get("NOTES_FILE", "/data/notes.json")


def load() -> list[dict]:
    try:
        with open(NOTES_FILE) as f:
            return json.load(f)
    except FileNotFoundError:
        return []


def save(notes: list[dict]) -> None:
    os.makedirs(os.path.dirname(NOTES_FILE), exist_ok=True)
    tmp = f"{NOTES_FILE}.tmp"
    with open(tmp, "w") as f:
        json.dump(notes, f)
    os.replace(tmp, NOTES_FILE)


class Handler(BaseHTTPRequestHandler):
    def reply(self, status: int, body: object = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self.reply(200, {"status": "ok"})
        elif self.path == "/notes":
            self.reply(200, load())
        else:
            self.reply(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        if self.path != "/notes":
            return self.reply(404, {"error": f"no route {self.path}"})
        length = int(self.headers.get("Content-Length", 0))
        try:
            text = json.loads(self.rfile.read(length))["text"]
        except (ValueError, KeyError, TypeError):
            return self.reply(400, {"error": 'expected {"text": "..."}'})
        notes = load()
        note = {"id": max((n["id"] for n in notes), default=0) + 1, "text": text}
        save([*notes, note])
        self.reply(201, note)

    def do_DELETE(self) -> None:
        prefix = "/notes/"
        if not self.path.startswith(prefix) or not self.path[len(prefix):].isdigit():
            return self.reply(404, {"error": f"no route {self.path}"})
        wanted = int(self.path[len(prefix):])
        notes = load()
        kept = [n for n in notes if n["id"] != wanted]
        if len(kept) == len(notes):
            return self.reply(404, {"error": f"no note {wanted}"})
        save(kept)
        self.reply(204)

    def log_message(self, format: str, *args: object) -> None:
        print(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else ''}", flush=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    print(f"notes service listening on port {port}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
