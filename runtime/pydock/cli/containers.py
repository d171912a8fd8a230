"""Container commands of the CLI: create, start, run, exec, logs, stop, kill, wait, rm, ps, ..."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the container subcommands to the CLI parser."""
