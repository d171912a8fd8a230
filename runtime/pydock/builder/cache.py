"""The build cache: each step's result (an image config document) under a key made from its
parent's key, the expanded instruction and the digest of what it copies (BuildKit's scheme).

An entry is the config bytes of the image after the step; its layers live in the store's
``layers/`` like any other (``pydock gc`` keeps the layers of cache entries; ``pydock gc
--build-cache`` drops the cache first).  A per-key file lock makes concurrent builds of the same
step (pytest-xdist workers) build it once: the second waits and then finds the entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from filelock import FileLock

from ..store import Store

#: Changes when what a step produces for the same input changes (entries of older builders
#: are then not reused).
SCHEMA = "2"


def step_key(parent: str, *parts: str) -> str:
    """The cache key of a step: sha256 over its parent key and its parts."""
    return hashlib.sha256(json.dumps([SCHEMA, parent, *parts]).encode()).hexdigest()


class BuildCache:
    """Cache entries in ``<store>/build-cache/<key>.json``; locks in ``build-cache/locks/``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dir = store.build_cache_dir
        self.locks = self.dir / "locks"
        self.locks.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> bytes | None:
        """The entry's config bytes, if it exists and all its layers are still in the store."""
        try:
            data = (self.dir / f"{key}.json").read_bytes()
            doc = json.loads(data)
            diff_ids = doc["rootfs"]["diff_ids"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not all(self.store.has_layer(d) for d in diff_ids):
            return None
        return data

    def put(self, key: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:12]}-{os.getpid()}-", dir=self.dir)
        try:
            with open(fd, "wb") as f:
                f.write(data)
            os.rename(tmp, self.dir / f"{key}.json")
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[None]:
        with FileLock(str(self.locks / f"{key[:32]}.lock")):
            yield


def encode(doc: dict[str, Any]) -> bytes:
    """Config documents as the store writes them (stable key order)."""
    return json.dumps(doc, indent=None, separators=(",", ":"), sort_keys=True).encode()
