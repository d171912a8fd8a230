"""Image commands of the CLI: import, images, tag, rmi, inspect (images), gc."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the image subcommands to the CLI parser."""
