"""Where pydock keeps its store by default (os and pathlib alone: the plugin asks before it
imports the engine)."""

from __future__ import annotations

import os
from pathlib import Path


def default_store() -> Path:
    """``$PYDOCK_STORE``, else ``$XDG_CACHE_HOME/pydock``, else ``~/.cache/pydock``."""
    if os.environ.get("PYDOCK_STORE"):
        return Path(os.environ["PYDOCK_STORE"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(cache) / "pydock"
