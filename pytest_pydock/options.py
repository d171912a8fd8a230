"""The plugin's options: read once from the command line and ini file into ``Settings``.

Light on purpose: the plugin module imports this at every pytest run, and the engine only
when a test needs it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import pytest


class Keep(enum.Enum):
    """Which containers outlive their test: none, those of failed tests, all."""

    NEVER = "never"
    FAILED = "failed"
    ALWAYS = "always"


@dataclass(frozen=True)
class Settings:
    """The plugin's options, read once from the command line and ini file."""

    backend: str
    store: str | None
    keep: Keep

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        def get(name: str) -> Any:
            value = config.getoption(f"pydock_{name}")
            return value if value is not None else config.getini(f"pydock_{name}")

        keep = get("keep") or "never"
        try:
            keep_value = Keep(keep)
        except ValueError:
            raise pytest.UsageError(
                f"--pydock-keep: {keep!r}: use never, failed or always") from None
        backend = get("backend") or "auto"
        if backend not in ("auto", "native", "docker"):
            raise pytest.UsageError(f"--pydock-backend: {backend!r}: use auto, native or docker")
        return cls(backend=backend, store=get("store") or None, keep=keep_value)


__all__ = ["Keep", "Settings"]
