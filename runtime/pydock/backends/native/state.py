"""A container's directory in the store: config.json, state.json, logs, writable layer."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
import zlib
from pathlib import Path

from ...errors import ContainerNotFound, NameConflict

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ...models import ContainerSpec


def now() -> str:
    """The time as state.json records it (RFC 3339 in UTC, nanoseconds, like Docker)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def write_json(path: Path | str, doc: Any) -> None:
    """Write JSON atomically: temp file in the same directory, then rename."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, json.dumps(doc).encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)


def spec_to_json(spec: ContainerSpec) -> dict[str, Any]:
    """The spec as JSON-ready data (dataclasses.asdict, without its deep copies)."""
    from dataclasses import fields
    doc = {f.name: getattr(spec, f.name) for f in fields(spec)}
    doc["mounts"] = [{f.name: getattr(m, f.name) for f in fields(m)} for m in spec.mounts]
    doc["ports"] = [{f.name: getattr(p, f.name) for f in fields(p)} for p in spec.ports]
    return doc


def spec_from_json(doc: dict[str, Any]) -> ContainerSpec:
    from ...models import ContainerSpec, Mount, PortSpec
    fields = dict(doc)
    fields["mounts"] = tuple(Mount(**m) for m in doc.get("mounts", ()))
    fields["ports"] = tuple(PortSpec(**p) for p in doc.get("ports", ()))
    fields["labels"] = tuple(tuple(kv) for kv in doc.get("labels", ()))
    for key in ("argv", "env", "network_aliases"):
        fields[key] = tuple(doc.get(key, ()))
    fields["extra_hosts"] = tuple(tuple(h) for h in doc.get("extra_hosts", ()))
    for key in ("cmd", "entrypoint"):
        fields[key] = None if doc.get(key) is None else tuple(doc[key])
    return ContainerSpec(**fields)


class MountDoc:
    """A mount of a LaunchSpec: the fields of models.Mount."""

    __slots__ = ("target", "kind", "source", "readonly", "options")

    def __init__(self, doc: dict[str, Any]) -> None:
        self.target: str = doc["target"]
        self.kind: str = doc["kind"]
        self.source: str = doc["source"]
        self.readonly: bool = doc["readonly"]
        self.options: str = doc["options"]


class LaunchSpec:
    """What starting a container reads of its spec, straight from config.json (which
    spec_to_json writes with every field), under ContainerSpec's field names.  The monitor
    uses this: the dataclasses of pydock.models (with dataclasses, inspect and typing)
    would add ~35 ms to the start of every monitor, which the first container of each
    session waits for."""

    __slots__ = ("argv", "env", "working_dir", "user", "hostname", "mounts", "network",
                 "extra_hosts", "init", "tty", "stdin_open", "auto_remove", "memory",
                 "pids_limit", "cpus")

    def __init__(self, doc: dict[str, Any]) -> None:
        self.argv: list[str] = doc["argv"]
        self.env: list[str] = doc["env"]
        self.working_dir: str = doc["working_dir"]
        self.user: str = doc["user"]
        self.hostname: str = doc["hostname"]
        self.mounts = [MountDoc(m) for m in doc["mounts"]]
        self.network: str = doc["network"]
        self.extra_hosts: list[list[str]] = doc["extra_hosts"]  # [host, ip] pairs
        self.init: bool = doc["init"]
        self.tty: bool = doc["tty"]
        self.stdin_open: bool = doc["stdin_open"]
        self.auto_remove: bool = doc["auto_remove"]
        self.memory: int | None = doc["memory"]
        self.pids_limit: int | None = doc["pids_limit"]
        self.cpus: float | None = doc["cpus"]


class ContainerDir:
    """Files of one container under ``<store>/containers/<id>``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.id = path.name
        self._config: dict[str, Any] | None = None
        self._state: dict[str, Any] | None = None
        self._spec: ContainerSpec | None = None
        self._launch_spec: LaunchSpec | None = None

    @property
    def rw_dir(self) -> Path:
        """Where the writable layer lives (the container's own directory)."""
        rw = self.config.get("rw_dir")
        return Path(rw) if rw else self.path

    upper = property(lambda self: self.rw_dir / "upper")
    work = property(lambda self: self.rw_dir / "work")
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
        if self._spec is None:
            self._spec = spec_from_json(self.config["spec"])
        return self._spec

    @property
    def launch_spec(self) -> LaunchSpec:
        """The part of ``spec`` a start reads, without loading pydock.models."""
        if self._launch_spec is None:
            self._launch_spec = LaunchSpec(self.config["spec"])
        return self._launch_spec

    # state.json and the /etc files live beside the writable layer: on tmpfs, where a write
    # costs a tenth of one on disk.  After a reboot they are gone with it, and the container
    # reads as created, with an empty writable layer.
    @property
    def state_file(self) -> Path:
        return self.rw_dir / "state.json"

    def read_state(self) -> dict[str, Any]:
        try:
            with open(self.state_file) as f:
                self._state = json.load(f)
        except FileNotFoundError:
            if not self.path.exists():
                raise ContainerNotFound(self.id) from None
            self._state = {"status": "created"}
        return dict(self._state)

    def write_state(self, **updates: Any) -> dict[str, Any]:
        """Update state.json (atomically); the writer is the container's monitor."""
        state = dict(self._state) if self._state is not None else self.read_state()
        state.update(updates)
        write_json(self.state_file, state)
        self._state = state
        return dict(state)

    def exists(self) -> bool:
        return (self.path / "config.json").exists()


class ContainerTable:
    """All containers of a store: ids, names, lookup by name / id / unique id prefix."""

    def __init__(self, root: Path, store_root: Path | None = None) -> None:
        self.root = root
        self.names = root / "names"
        self.store_root = store_root

    def ensure(self) -> None:
        if not self.names.is_dir():  # the first container, or made anew after tidy()/reboot
            self.root.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.names.mkdir(parents=True, exist_ok=True)
            if self.store_root is not None:
                claim_run_dir(self.root, self.store_root)

    def tidy(self) -> None:
        """Remove this table's directory when it holds no container (the caller holds the
        store lock); a tmpfs run directory then leaves nothing behind on the host."""
        try:
            self.prune_exits(max_age=0)
            exits = self.root / "exits"
            if exits.is_dir() and not os.listdir(exits):
                os.rmdir(exits)
            if os.listdir(self.root) == ["names"] and not os.listdir(self.names):
                os.rmdir(self.names)
                os.rmdir(self.root)
                if self.root.parent.name.startswith("pydock-"):
                    owner = self.root.parent / "store"
                    if owner.exists():
                        owner.unlink()
                    os.rmdir(self.root.parent)
        except OSError:
            pass

    def new(self, spec_for_id: Any, layers: list[str], image_id: str,
            created: str) -> ContainerDir:
        """Create the directory of a new container; ``spec_for_id(id)`` makes its spec."""
        cid = os.urandom(32).hex()
        spec: ContainerSpec = spec_for_id(cid)  # validates: nothing is made for bad input
        self.ensure()
        name = spec.name or _generated_name(cid)
        try:
            os.symlink(cid, self.names / name)
        except FileExistsError:
            other = os.readlink(self.names / name)
            raise NameConflict(
                f'the container name "/{name}" is already in use by container "{other}". '
                "Remove (or rename) that container to reuse the name.") from None
        try:
            tmp = f"{self.root}/.{cid}.tmp"
            os.mkdir(tmp)
            for sub in ("rootfs", "upper", "work"):
                os.mkdir(f"{tmp}/{sub}")
            doc = {"id": cid, "name": name, "created": created, "image_id": image_id,
                   "layers": layers, "spec": spec_to_json(spec) | {"name": name}}
            write_json(Path(tmp, "config.json"), doc)
            os.rename(tmp, f"{self.root}/{cid}")
        except BaseException:
            import shutil
            shutil.rmtree(f"{self.root}/.{cid}.tmp", ignore_errors=True)
            os.unlink(self.names / name)
            raise
        return ContainerDir(self.root / cid)

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if len(p.name) == 64 and p.is_dir()]

    def lookup(self, ref: str) -> ContainerDir:
        ref = ref.lstrip("/")
        if len(ref) == 64 and os.path.isdir(f"{self.root}/{ref}"):
            return ContainerDir(self.root / ref)
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

    def record_exit(self, d: ContainerDir, state: dict[str, Any]) -> None:
        """Keep the exit status of a container about to be auto-removed (``wait`` reads it)."""
        exits = self.root / "exits"
        exits.mkdir(exist_ok=True)
        write_json(exits / d.id, {k: state.get(k) for k in ("status", "exit_code",
                                                            "oom_killed", "finished_at")})

    def exit_record(self, cid: str) -> dict[str, Any] | None:
        try:
            with open(self.root / "exits" / cid) as f:
                return json.load(f)  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return None

    def prune_exits(self, max_age: float = 600.0) -> None:
        import time
        for path in (self.root / "exits").glob("*") if (self.root / "exits").is_dir() else []:
            try:
                if time.time() - path.stat().st_mtime > max_age:
                    path.unlink()
            except OSError:
                pass

    def release_name(self, d: ContainerDir) -> None:
        """Free the container's name now (its directory may go later)."""
        name = d.config.get("name")
        link = self.names / str(name)
        try:
            if name and os.readlink(link) == d.id:
                os.unlink(link)
        except OSError:
            pass

    def delete(self, d: ContainerDir) -> None:
        """Remove a container's directory and its name (the caller checked its state)."""
        trash = self.discard(d)
        if trash is not None:
            import shutil
            shutil.rmtree(trash, ignore_errors=True)

    def discard(self, d: ContainerDir) -> Path | None:
        """Take a container out of the table at once: its directory renamed to a trash
        name (``.<id>.rm``, which no lookup sees), its name freed.  Returns the trash
        directory, for the caller to delete (the sweep deletes what a dead process left)."""
        name = d.config.get("name")
        trash = self.root / f".{d.id}.rm"
        try:
            os.rename(d.path, trash)
        except FileNotFoundError:
            return None
        if name and os.path.islink(self.names / name) and \
                os.readlink(self.names / name) == d.id:
            os.unlink(self.names / name)
        return trash

    def is_trash(self, path: str) -> bool:
        """Whether ``path`` is a trash directory of this table (see discard)."""
        name = os.path.basename(path)
        return (os.path.dirname(path) == str(self.root) and len(name) == 68
                and name.startswith(".") and name.endswith(".rm"))


def _fs_type(path: str) -> str | None:
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if fields[4] == path:
                    return fields[fields.index("-") + 1]
    except (OSError, ValueError, IndexError):
        pass
    return None


def containers_root(store_root: Path) -> Path:
    """Where a store's containers live: a tmpfs directory when the host has one.

    Container directories hold small, hot files (state.json, the /etc files) and the
    writable layer: on tmpfs an overlay mount, a state write and a removal cost a fraction
    of what they cost on disk, and an upper dir on tmpfs works where the store is on
    overlayfs (Docker-in-Docker).  /dev/shm is the tmpfs every Linux host has; what
    containers write counts against their memory limit, and containers do not survive a
    reboot.  ``<store>/containers`` is a symlink to it.  PYDOCK_CONTAINERS=disk keeps
    containers inside the store instead.
    """
    link = store_root / "containers"
    if os.environ.get("PYDOCK_CONTAINERS") == "disk" or _fs_type("/dev/shm") != "tmpfs":
        return link
    run = Path("/dev/shm") / f"pydock-{store_tag(store_root)}" / "containers"
    # Made by ContainerTable.ensure() on the first create, so read-only commands leave
    # nothing on the host.
    if link.is_symlink():
        if os.readlink(link) != str(run):
            os.unlink(link)
            os.symlink(run, link)
        return run
    tmp = store_root / f".containers.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(run, tmp)
    # Several processes may get here at once, and a Store() of a third one may re-create the
    # empty directory meanwhile: replace an empty directory until the link is in place.
    for _ in range(100):
        try:
            os.rename(tmp, link)
            return run
        except (IsADirectoryError, NotADirectoryError):
            try:
                link.rmdir()  # an empty directory made by the store: replace it
            except (FileNotFoundError, NotADirectoryError):  # another process linked it
                continue
            except OSError:
                os.unlink(tmp)
                return link  # containers kept on disk by an earlier choice
    os.unlink(tmp)
    raise OSError(f"cannot link {link} to {run}: it keeps being re-created")


def store_tag(root: Path) -> str:
    """8 hex digits naming a store (or its containers dir) in host-wide names."""
    # crc32, not hashlib: the monitor stays free of OpenSSL (smaller, faster to fork)
    return f"{zlib.crc32(str(root.resolve()).encode()):08x}"


@functools.lru_cache(maxsize=16)
def cgroup_prefix(containers_root: Path) -> str:
    """Every cgroup of a store's containers is named ``pydock-<tag>-...``."""
    return f"pydock-{store_tag(containers_root)}-"


_ADJ = ("brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid",
        "merry", "nifty", "proud", "quiet", "sharp", "tender", "vivid", "witty", "zen")
_NOUN = ("ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "ibis", "jay", "koi",
         "lynx", "mole", "newt", "owl", "pug", "ram", "seal", "tern", "yak")


def _generated_name(cid: str) -> str:
    n = int(cid[:8], 16)
    return f"{_ADJ[n % len(_ADJ)]}_{_NOUN[(n // 97) % len(_NOUN)]}_{cid[:6]}"


def claim_run_dir(containers: Path, store_root: Path) -> None:
    """Record which store a tmpfs run directory belongs to (the sweep reads it)."""
    run = containers.parent
    if run.parent != Path("/dev/shm") or not run.name.startswith("pydock-"):
        return
    owner = run / "store"
    if not owner.exists():
        write_json(owner, str(store_root.resolve()))


def orphaned_run_dirs() -> list[Path]:
    """tmpfs run directories whose store no longer exists (its tests' tmp dir was deleted)."""
    out = []
    for run in Path("/dev/shm").glob("pydock-*"):
        try:
            with open(run / "store") as f:
                store = json.load(f)
        except (OSError, ValueError):
            continue
        if not os.path.isdir(store):
            out.append(run)
    return out
