"""The image builder: a Dockerfile and its context become an image in the store, step by step
through a layer cache; RUN steps run in native containers."""

from __future__ import annotations

from .engine import BuildOptions, BuildReporter, BuildResult, build

__all__ = ["BuildOptions", "BuildReporter", "BuildResult", "build"]
