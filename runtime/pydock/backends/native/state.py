"""A container's directory in the store: config.json, state.json, logs, writable layer."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ...errors import ContainerNotFound, NameConflict
from ...models import ContainerSpec, Mount


def write_json(path: Path, doc: Any) -> None:
    """Write JSON atomically: temp file in the same directory, then rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.rename(tmp, path)


def spec_from_json(doc: dict[str, Any]) -> ContainerSpec:
    fields = dict(doc)
    fields["mounts"] = tuple(Mount(**m) for m in doc.get("mounts", ()))
    fields["labels"] = tuple(tuple(kv) for kv in doc.get("labels", ()))
    for key in ("argv", "env"):
        fields[key] = tuple(doc.get(key, ()))
    for key in ("cmd", "entrypoint"):
        fields[key] = None if doc.get(key) is None else tuple(doc[key])
    return ContainerSpec(**fields)


class ContainerDir:
    """Files of one container under ``<store>/containers/<id>``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.id = path.name
        self._config: dict[str, Any] | None = None

    upper = property(lambda self: self.path / "upper")
    work = property(lambda self: self.path / "work")
    rootfs = property(lambda self: self.path / "rootfs")
    stdout_log = property(lambda self: self.path / "stdout.log")
    stderr_log = property(lambda self: self.path / "stderr.log")

    @property
    def config(self) -> dict[str, Any]:
        if self._config is None:
            try:
                with open(self.path / "config.json") as f:
                    self._config = json.load(f)
            except FileNotFoundError:
                raise ContainerNotFound(self.id) from None
        return self._config

    @property
    def spec(self) -> ContainerSpec:
        return spec_from_json(self.config["spec"])

    def read_state(self) -> dict[str, Any]:
        try:
            with open(self.path / "state.json") as f:
                return json.load(f)  # type: ignore[no-any-return]
        except FileNotFoundError:
            if not self.path.exists():
                raise ContainerNotFound(self.id) from None
            return {"status": "created"}

    def write_state(self, **updates: Any) -> dict[str, Any]:
        state = self.read_state()
        state.update(updates)
        write_json(self.path / "state.json", state)
        return state

    def exists(self) -> bool:
        return (self.path / "config.json").exists()


class ContainerTable:
    """All containers of a store: ids, names, lookup by name / id / unique id prefix."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.names = root / "names"

    def ensure(self) -> None:
        self.names.mkdir(parents=True, exist_ok=True)

    def new(self, spec_for_id: Any, layers: list[str], image_id: str,
            created: str) -> ContainerDir:
        """Create the directory of a new container; ``spec_for_id(id)`` makes its spec."""
        self.ensure()
        cid = secrets.token_hex(32)
        spec: ContainerSpec = spec_for_id(cid)
        name = spec.name or _generated_name(cid)
        try:
            os.symlink(cid, self.names / name)
        except FileExistsError:
            other = os.readlink(self.names / name)
            raise NameConflict(
                f'the container name "/{name}" is already in use by container "{other}". '
                "Remove (or rename) that container to reuse the name.") from None
        try:
            tmp = self.root / f".{cid}.tmp"
            tmp.mkdir()
            for sub in ("upper", "work", "rootfs"):
                (tmp / sub).mkdir()
            doc = {"id": cid, "name": name, "created": created, "image_id": image_id,
                   "layers": layers, "spec": asdict(spec) | {"name": name}}
            write_json(tmp / "config.json", doc)
            os.rename(tmp, self.root / cid)
        except BaseException:
            shutil.rmtree(self.root / f".{cid}.tmp", ignore_errors=True)
            os.unlink(self.names / name)
            raise
        return ContainerDir(self.root / cid)

    def ids(self) -> list[str]:
        if not self.root.exists():
            return []
        return [p.name for p in self.root.iterdir() if len(p.name) == 64 and p.is_dir()]

    def lookup(self, ref: str) -> ContainerDir:
        ref = ref.lstrip("/")
        if ref and "/" not in ref and os.path.islink(self.names / ref):
            d = ContainerDir(self.root / os.readlink(self.names / ref))
            if d.exists():
                return d
        if len(ref) == 64 and (self.root / ref).is_dir():
            return ContainerDir(self.root / ref)
        if len(ref) >= 1 and all(c in "0123456789abcdef" for c in ref):
            matches = [i for i in self.ids() if i.startswith(ref)]
            if len(matches) == 1:
                return ContainerDir(self.root / matches[0])
            if len(matches) > 1:
                raise ContainerNotFound(f"{ref} (ambiguous: {len(matches)} containers match)")
        raise ContainerNotFound(ref)

    def delete(self, d: ContainerDir) -> None:
        """Remove a container's directory and its name (the caller checked its state)."""
        name = d.config.get("name")
        trash = self.root / f".{d.id}.rm"
        try:
            os.rename(d.path, trash)
        except FileNotFoundError:
            return
        if name and os.path.islink(self.names / name) and \
                os.readlink(self.names / name) == d.id:
            os.unlink(self.names / name)
        shutil.rmtree(trash, ignore_errors=True)


_ADJ = ("brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid",
        "merry", "nifty", "proud", "quiet", "sharp", "tender", "vivid", "witty", "zen")
_NOUN = ("ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "ibis", "jay", "koi",
         "lynx", "mole", "newt", "owl", "pug", "ram", "seal", "tern", "yak")


def _generated_name(cid: str) -> str:
    n = int(cid[:8], 16)
    return f"{_ADJ[n % len(_ADJ)]}_{_NOUN[(n // 97) % len(_NOUN)]}_{cid[:6]}"
