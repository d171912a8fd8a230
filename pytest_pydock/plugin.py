"""The pytest plugin (entry point ``pytest11``); fixtures arrive with the plugin issue."""

from __future__ import annotations
