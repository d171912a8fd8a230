"""Where images come from besides Dockerfile builds: registries, archives, the host."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..models import Image
    from ..store import Store


def resolve_base(store: Store, ref: str) -> Image:
    """The image a build's FROM names: the host base image (made, or refreshed when the
    host changed), else the store's image, else pulled from its registry (like
    ``docker build``, an image already in the store is not pulled again)."""
    from ..errors import ImageNotFound
    from .host import host_image, is_host_ref
    if is_host_ref(ref):
        return host_image(store)
    try:
        return store.image(ref)
    except ImageNotFound:
        pass
    from .registry import pull
    return pull(store, ref)
