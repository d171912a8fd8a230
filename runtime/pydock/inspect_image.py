"""``docker image inspect``-shaped documents for images in the store."""

from __future__ import annotations

from typing import Any

from .store import Store


def inspect_image_doc(store: Store, ref: str) -> dict[str, Any]:
    """The image ``ref`` names, as the JSON object ``docker image inspect`` prints for it."""
    image = store.image(ref)
    doc = store.config_document(image)
    history = doc.get("history") or []
    comment = next((h["comment"] for h in reversed(history) if h.get("comment")), "")
    return {
        "Id": image.id,
        "RepoTags": list(image.tags),
        "RepoDigests": [],
        "Parent": "",
        "Comment": comment,
        "Created": image.created,
        "Author": doc.get("author", ""),
        "Config": image.config.to_docker(),
        "Architecture": image.architecture,
        "Os": image.os,
        "Size": image.size,
        "GraphDriver": {
            "Name": "overlay",
            "Data": {"LowerDir": ":".join(
                str(store.layers_dir / name) for name in store.layer_names(image))},
        },
        "RootFS": {"Type": "layers", "Layers": list(image.diff_ids)},
    }
