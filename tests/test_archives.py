"""pydock save / load: docker archives and OCI layouts, round trips, Docker itself, bad input."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conftest import pydock_cli, require_service
from pydock.errors import ArchiveError, ImageNotFound
from pydock.models import ImageConfig
from pydock.sources.archives import LoadedImage, load_images, save_images
from pydock.store import Store
from tarhelp import Entry, d, f, hard, sha256, snapshot, store_state, sym, tar_bytes

CONFIG = ImageConfig(cmd=("sh",), env=("PATH=/bin",), labels=(("org.example", "yes"),))

# A layer with everything a filesystem can hold that matters to images ...
LAYER1 = tar_bytes(
    d("etc"), f("etc/motd", b"hello\n"),
    d("data", mode=0o750, uid=1000, gid=2000),
    f("data/secret", b"s3cret", mode=0o600, uid=1000, gid=2000),
    f("data/suid", b"#!x", mode=0o4755),
    sym("data/link", "secret"), hard("data/hard", "data/secret"),
    f("data/attr", b"", xattrs={"user.note": b"kept"}),
    Entry("data/fifo", tarfile.FIFOTYPE, mode=0o640),
    d("old"), f("old/a", b"a"), f("gone", b"g"),
)
# ... and one on top that deletes (a whiteout), replaces a directory (opaque) and overwrites.
LAYER2 = tar_bytes(
    f(".wh.gone"), d("old"), f("old/.wh..wh..opq"), f("old/b", b"b"),
    d("etc"), f("etc/motd", b"second\n", mode=0o640, uid=1000, gid=2000),
)


@pytest.fixture
def store(store_dir: Path) -> Store:
    return Store(store_dir)


def other(tmp_path: Path, name: str = "other") -> Store:
    return Store(tmp_path / name)


def multi_layer(store: Store, ref: str = "multi:1") -> str:
    """A two-layer image made of LAYER1 and LAYER2; returns its id."""
    diff_ids = [store.add_layer_tar(io.BytesIO(layer)) for layer in (LAYER1, LAYER2)]
    image = store.create_image(CONFIG, diff_ids, history_comment="two layers")
    store.tag(image.id, ref)
    return image.id


def own_layers(store: Store, ref: str = "multi:1") -> str:
    """The two-layer image, saved and loaded once, so that its layers are pydock's own (they
    re-tar to their diff_ids); ``ref`` names it.  Returns its id."""
    multi_layer(store, ref)
    [normal] = load(store, saved(store, ref))
    return normal.image.id


def saved(store: Store, *refs: str) -> bytes:
    buf = io.BytesIO()
    save_images(store, list(refs), buf)
    return buf.getvalue()


def load(store: Store, data: bytes, source: str = "test.tar") -> list[LoadedImage]:
    return load_images(store, io.BytesIO(data), source=source)


def members(data: bytes) -> dict[str, bytes]:
    """Regular members of a tar (links as ``-> target``)."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar:
            if m.isreg():
                out[m.name] = tar.extractfile(m).read()  # type: ignore[union-attr]
            elif m.issym() or m.islnk():
                out[m.name] = b"-> " + m.linkname.encode()
    return out


def rebuild(files: dict[str, bytes]) -> bytes:
    """A tar of ``files`` (values ``b"-> target"`` become symlinks), in the given order."""
    entries = [sym(n, v[3:].decode()) if v.startswith(b"-> ") else f(n, v)
               for n, v in files.items()]
    return tar_bytes(*entries)


def blob(files: dict[str, bytes], data: bytes) -> dict[str, Any]:
    digest = sha256(data)
    files["blobs/sha256/" + digest[7:]] = data
    return {"digest": digest, "size": len(data)}


def layer_snapshots(store: Store, diff_ids: tuple[str, ...]) -> list[dict[str, Any]]:
    return [snapshot(store.layer_path(diff_id)) for diff_id in diff_ids]


def without_diff_ids(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "rootfs"} | {"rootfs_type": doc["rootfs"]["type"]}


# -- round trips inside pydock ---------------------------------------------------------------


def test_round_trip_keeps_config_layers_and_every_kind_of_file(store: Store, tmp_path: Path) -> None:
    original = store.image(multi_layer(store))
    archive = saved(store, "multi:1")
    names = set(members(archive))
    assert {"manifest.json", "index.json", "oci-layout", "repositories"} <= names

    target = other(tmp_path)
    [loaded] = load(target, archive)
    assert loaded.refs == ("multi:1",) and loaded.image.tags == ("multi:1",)
    copy = loaded.image
    # layers imported from foreign tars re-tar to other bytes: the archive's config lists
    # the digests of what it holds, so the id is new; everything else is the same
    retarred = tuple(store.layer_tar(d, io.BytesIO()) for d in original.diff_ids)
    assert retarred != original.diff_ids
    assert copy.diff_ids == retarred
    assert copy.id != original.id
    assert without_diff_ids(target.config_document(copy)) == without_diff_ids(
        store.config_document(original))
    assert copy.config == original.config
    assert layer_snapshots(target, copy.diff_ids) == layer_snapshots(store, original.diff_ids)
    gone, opaque = layer_snapshots(target, copy.diff_ids)[1]["gone"], None
    assert gone[0] == 0o020000 and gone[5] == (0, 0)  # a whiteout: a 0/0 character device
    opaque = layer_snapshots(target, copy.diff_ids)[1]["old"][6]
    assert opaque == {"trusted.overlay.opaque": b"y"}
    first = layer_snapshots(target, copy.diff_ids)[0]
    assert first["data/hard"][5][1] == first["data/secret"][5][1]  # still one inode
    assert first["data/suid"][1] == 0o4755 and first["data/secret"][2:4] == (1000, 2000)

    # from then on the layers are pydock's own: ids survive every further round trip
    again = other(tmp_path, "third")
    [reloaded] = load(again, saved(target, "multi:1"))
    assert reloaded.image.id == copy.id and reloaded.image.diff_ids == copy.diff_ids
    assert saved(again, "multi:1") == saved(target, "multi:1")  # and the bytes are stable


def test_committed_layers_keep_their_diff_id(backend, store_dir: Path, tmp_path: Path) -> None:
    from pydock.backends.native import rootfs

    c = backend.run("busybox", command=["sh", "-c", (
        "mkdir /data && echo seed > /data/x && ln /data/x /data/hard && ln -s x /data/link && "
        "chown 1000:2000 /data/x && chmod 640 /data/x && rm /etc/group")])
    assert c.wait(30).exit_code == 0
    image = rootfs.commit(c, ref="seeded:1", changes=['CMD ["cat", "/data/x"]'])
    c.remove()
    archive = saved(Store(store_dir), "seeded:1")
    manifest = json.loads(members(archive)["manifest.json"])
    config = json.loads(members(archive)[manifest[0]["Config"]])
    assert config["rootfs"]["diff_ids"][1] == image.diff_ids[1]  # the committed layer: as is

    target = other(tmp_path)
    [loaded] = load(target, archive)
    assert layer_snapshots(target, loaded.image.diff_ids[1:]) == layer_snapshots(
        Store(store_dir), image.diff_ids[1:])
    result = pydock_cli("--store", str(target.root), "run", "--rm", "seeded:1", "sh", "-c",
                        "cat /data/x; stat -c '%u:%g %a' /data/x; readlink /data/link; "
                        "test -e /etc/group || echo no-group")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"seed\n1000:2000 640\nx\nno-group\n"


def test_a_name_saves_all_its_tags_an_id_saves_no_name(store: Store, busybox_image: str) -> None:
    multi = multi_layer(store, "multi:1")
    store.tag(store.image("busybox").id, "multi:old")
    manifest = json.loads(members(saved(store, "multi"))["manifest.json"])
    assert sorted(tag for item in manifest for tag in item["RepoTags"]) == ["multi:1", "multi:old"]

    by_id = saved(store, multi[:19])
    assert json.loads(members(by_id)["manifest.json"])[0]["RepoTags"] == []
    fresh = Store(store.root.parent / "by-id")
    [loaded] = load(fresh, by_id)
    assert loaded.refs == () and loaded.image.tags == ()
    both = json.loads(members(saved(store, "busybox", "multi:1", "busybox:latest"))["manifest.json"])
    assert [item["RepoTags"] for item in both] == [["busybox:latest"], ["multi:1"]]
    with pytest.raises(ImageNotFound):
        saved(store, "multi:1", "nosuch:1")


def test_saving_and_loading_many_images_shares_layers(store: Store, tmp_path: Path) -> None:
    first = store.image(multi_layer(store, "multi:1"))
    top = store.add_layer_tar(io.BytesIO(tar_bytes(f("extra", b"3"))))
    second = store.create_image(CONFIG, [*first.diff_ids, top], base=first)
    store.tag(second.id, "multi:2")
    archive = saved(store, "multi:1", "multi:2")
    layers = [n for n in members(archive) if n.startswith("blobs/")]
    assert len(layers) == 3 + 2 + 2  # three layer blobs (shared ones once), 2 configs, 2 manifests
    loaded = load(other(tmp_path), archive)
    assert [item.refs for item in loaded] == [("multi:1",), ("multi:2",)]
    assert loaded[1].image.diff_ids[:2] == loaded[0].image.diff_ids


# -- the CLI ---------------------------------------------------------------------------------


def cli_ok(*args: str, input: bytes | None = None) -> bytes:
    result = pydock_cli(*args, input=input)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    return result.stdout


def cli_fails(*args: str, input: bytes | None = None) -> str:
    result = pydock_cli(*args, input=input)
    stderr = result.stderr.decode()
    assert result.returncode != 0
    assert "Traceback" not in stderr
    assert stderr.startswith("pydock: error: ") and stderr.count("\n") == 1, stderr
    return stderr


def test_cli_save_to_a_file_and_to_a_pipe(store: Store, tmp_path: Path) -> None:
    multi_layer(store)
    out = tmp_path / "multi.tar"
    assert cli_ok("save", "-o", str(out), "multi:1") == b""
    assert out.stat().st_mode & 0o777 == 0o644
    assert cli_ok("save", "multi:1") == out.read_bytes()  # stdout is a pipe here

    stderr = cli_fails("save", "-o", str(tmp_path / "nosuch.tar"), "nosuch:1")
    assert "nosuch:1" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multi.tar", "store"]  # no leftovers
    assert "cannot write" in cli_fails("save", "-o", str(tmp_path / "no" / "dir.tar"), "multi:1")


def test_cli_save_refuses_a_terminal(store: Store) -> None:
    multi_layer(store)
    controller, terminal = os.openpty()
    try:
        result = subprocess.run([sys.executable, "-m", "pydock", "save", "multi:1"],
                                stdout=terminal, stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(terminal)
        os.close(controller)
    assert result.returncode != 0
    assert result.stderr == (b"pydock: error: cowardly refusing to save to a terminal. "
                             b"Use the -o flag or redirect\n")


def test_cli_load_from_a_file_stdin_and_gzip(store: Store, tmp_path: Path) -> None:
    source = other(tmp_path, "source")
    image_id = multi_layer(source)
    archive = saved(source, "multi:1")
    (tmp_path / "a.tar").write_bytes(archive)
    (tmp_path / "a.tar.gz").write_bytes(gzip.compress(archive))

    assert cli_ok("load", "-i", str(tmp_path / "a.tar")) == b"Loaded image: multi:1\n"
    loaded = store.image("multi:1")
    assert loaded.id != image_id  # see test_round_trip_...: foreign layers got new digests
    for args, data in ((["load"], archive), (["load", "-i", "-", "-q"], archive),
                       (["load"], gzip.compress(archive)),
                       (["load", "-i", str(tmp_path / "a.tar.gz")], None)):
        assert cli_ok(*args, input=data) == b"Loaded image: multi:1\n", args
        assert store.image("multi:1").id == loaded.id
    assert len(store.images()) == 1
    assert list(store.tmp_dir.iterdir()) == []  # the spool is gone, nothing left pinned


def test_cli_load_reports_a_moved_tag_and_untagged_images(store: Store, busybox_image: str,
                                                          tmp_path: Path) -> None:
    old = store.image("busybox").id
    source = other(tmp_path, "source")
    multi_layer(source, "busybox:latest")
    out = cli_ok("load", input=saved(source, "busybox"))
    new = store.image("busybox").id
    assert out.decode() == (f"The image busybox:latest already exists, renaming the old one "
                            f"with ID {old} to empty string\nLoaded image: busybox:latest\n")
    assert new != old and store.image(old).tags == ()
    by_id = saved(store, old)
    config = json.loads(members(by_id)["manifest.json"])[0]["Config"]
    assert cli_ok("load", input=by_id) == f"Loaded image ID: sha256:{config[13:]}\n".encode()


def test_cli_load_errors(store: Store, tmp_path: Path) -> None:
    assert "cannot read" in cli_fails("load", "-i", str(tmp_path / "nosuch.tar"))
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(4096))
    stderr = cli_fails("load", "-i", str(junk))
    assert str(junk) in stderr and "not a tar archive" in stderr
    assert "stdin: corrupt image archive" in cli_fails("load", input=b"\x1f\x8b" + b"x" * 100)
    assert "stdin" in cli_fails("load", input=b"")


# -- formats written by others -----------------------------------------------------------------


def legacy_archive(store: Store, ref: str) -> bytes:
    """What Docker 20.10 writes: <v1 id>/layer.tar (a later layer with the same content is a
    symlink to the first), <image id>.json, manifest.json with RepoTags."""
    image = store.image(ref)
    files: dict[str, bytes] = {}
    layer_paths = []
    first: dict[str, str] = {}
    for n, diff_id in enumerate(image.diff_ids):
        v1 = hashlib.sha256(f"{image.id}{n}".encode()).hexdigest()
        buf = io.BytesIO()
        store.layer_tar(diff_id, buf)
        files[f"{v1}/VERSION"] = b"1.0"
        files[f"{v1}/json"] = b"{}"
        if diff_id in first:
            files[f"{v1}/layer.tar"] = f"-> ../{first[diff_id]}/layer.tar".encode()
        else:
            files[f"{v1}/layer.tar"] = buf.getvalue()
            first[diff_id] = v1
        layer_paths.append(f"{v1}/layer.tar")
    config = (store.images_dir / f"{image.id[7:]}.json").read_bytes()
    files[f"{image.id[7:]}.json"] = config
    files["manifest.json"] = json.dumps(
        [{"Config": f"{image.id[7:]}.json", "RepoTags": [ref], "Layers": layer_paths}]).encode()
    return rebuild(files)


def test_docker_20_10_layout_with_a_symlinked_layer(store: Store, tmp_path: Path) -> None:
    source = other(tmp_path, "source")
    normal = source.image(own_layers(source))
    twice = source.create_image(CONFIG, [*normal.diff_ids, normal.diff_ids[0]])
    source.tag(twice.id, "twice:1")
    archive = legacy_archive(source, "twice:1")
    assert any(v.startswith(b"-> ../") for v in members(archive).values())
    [loaded] = load(store, archive)
    assert loaded.image.id == twice.id and loaded.refs == ("twice:1",)


def oci_layout(store: Store, ref: str, *, gzip_layers: bool, annotations: dict[str, str],
               nested: bool) -> tuple[bytes, str]:
    """An OCI image layout tar of ``ref``, (gzip) layers and, with ``nested``, an index for two
    platforms whose foreign one has no blobs at all; returns it and the config's digest."""
    image = store.image(ref)
    files: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}'}
    layers = []
    for diff_id in image.diff_ids:
        buf = io.BytesIO()
        store.layer_tar(diff_id, buf)
        data = gzip.compress(buf.getvalue()) if gzip_layers else buf.getvalue()
        kind = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gzip_layers else "")
        layers.append({"mediaType": kind} | blob(files, data))
    config = (store.images_dir / f"{image.id[7:]}.json").read_bytes()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json"}
                | blob(files, config), "layers": layers}
    top = {"mediaType": "application/vnd.oci.image.manifest.v1+json"} | blob(
        files, json.dumps(manifest).encode())
    if nested:
        arch = store.config_document(image)["architecture"]
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": [
                     {"mediaType": top["mediaType"], "digest": sha256(b"elsewhere"), "size": 9,
                      "platform": {"os": "linux", "architecture": "s390x"}},
                     top | {"platform": {"os": "linux", "architecture": arch}}]}
        top = {"mediaType": "application/vnd.oci.image.index.v1+json"} | blob(
            files, json.dumps(index).encode())
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [
        top | {"annotations": annotations}]}).encode()
    return rebuild(dict(reversed(files.items()))), sha256(config)  # index.json first


@pytest.mark.parametrize("gzip_layers,nested", [(True, True), (False, False)])
def test_oci_image_layout(store: Store, tmp_path: Path, gzip_layers: bool, nested: bool) -> None:
    source = other(tmp_path, "source")
    image_id = own_layers(source)
    annotations = {"org.opencontainers.image.ref.name": "localhost:5000/oci/app:2.0"}
    archive, config_digest = oci_layout(source, "multi:1", gzip_layers=gzip_layers,
                                        annotations=annotations, nested=nested)
    [loaded] = load(store, archive)
    assert loaded.image.id == config_digest == image_id  # the config bytes are kept
    assert loaded.refs == ("localhost:5000/oci/app:2.0",)
    assert layer_snapshots(store, loaded.image.diff_ids) == layer_snapshots(
        source, loaded.image.diff_ids)


def test_oci_names_bare_tags_and_pydock_archives_as_layouts(store: Store, tmp_path: Path) -> None:
    source = other(tmp_path, "source")
    own_layers(source)
    archive, _ = oci_layout(source, "multi:1", gzip_layers=False, nested=False,
                            annotations={"org.opencontainers.image.ref.name": "latest"})
    [bare] = load(store, archive)
    assert bare.refs == ()  # a bare tag names no repository
    ours = members(saved(source, "multi:1"))
    del ours["manifest.json"]  # what is left is an OCI image layout (containerd's names)
    [layout] = load(store, rebuild(ours))
    assert layout.refs == ("multi:1",) and layout.image.id == bare.image.id


# -- Docker ------------------------------------------------------------------------------------


def docker(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["docker", *args], input=input, capture_output=True, timeout=120)


def docker_available() -> bool:
    try:
        return docker("version").returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture
def docker_names():  # type: ignore[no-untyped-def]
    """Image names a test gives Docker; removed from Docker afterwards (by these names)."""
    require_service(docker_available(), "a Docker daemon (`docker version`)")
    names: list[str] = []
    yield names
    for name in names:
        docker("rmi", name)


def test_pydock_save_loads_into_docker(store: Store, busybox_image: str, tmp_path: Path,
                                       docker_names: list[str]) -> None:
    name = f"pydock-test-archives-save-{os.getpid()}:1"
    docker_names.append(name)
    base = store.image("busybox")
    top = store.add_layer_tar(io.BytesIO(tar_bytes(
        d("etc"), f("etc/motd", b"from pydock\n"), f("etc/.wh.group"))))
    image = store.create_image(CONFIG, [*base.diff_ids, top], base=base)
    store.tag(image.id, name)
    cli_ok("save", "-o", str(tmp_path / "out.tar"), name)
    result = docker("load", "-i", str(tmp_path / "out.tar"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Loaded image: {name}\n".encode()
    run = docker("run", "--rm", name, "sh", "-c", "cat /etc/motd; test -e /etc/group || echo gone")
    assert run.returncode == 0, run.stderr
    assert run.stdout == b"from pydock\ngone\n"
    manifest = json.loads(members((tmp_path / "out.tar").read_bytes())["manifest.json"])
    inspect = json.loads(docker("image", "inspect", name).stdout)[0]
    assert inspect["Id"] == "sha256:" + manifest[0]["Config"].rpartition("/")[2]
    assert inspect["Config"]["Labels"] == {"org.example": "yes"}


def test_docker_save_loads_into_pydock(store: Store, busybox_tar: Path, tmp_path: Path,
                                       docker_names: list[str]) -> None:
    base = f"pydock-test-archives-import-{os.getpid()}:1"
    name = f"pydock-test-archives-commit-{os.getpid()}:1"
    docker_names.extend([name, base])
    result = docker("import", "-c", 'CMD ["sh"]', str(busybox_tar), base)
    assert result.returncode == 0, result.stderr
    container = f"pydock-test-archives-{os.getpid()}"
    try:
        run = docker("run", "--name", container, base, "sh", "-c",
                     "echo from docker > /etc/motd && rm /etc/group")
        assert run.returncode == 0, run.stderr
        assert docker("commit", container, name).returncode == 0
    finally:
        docker("rm", "-f", container)
    docker_id = json.loads(docker("image", "inspect", name).stdout)[0]["Id"]
    archive = docker("save", name).stdout
    assert "manifest.json" in members(archive)

    assert cli_ok("load", input=archive) == f"Loaded image: {name}\n".encode()  # a pipe
    assert store.image(name).id == docker_id
    (tmp_path / "docker.tar").write_bytes(archive)
    fresh = other(tmp_path)
    with open(tmp_path / "docker.tar", "rb") as file:
        [loaded] = load_images(fresh, file)  # a file, read in place
    assert loaded.image.id == docker_id and len(loaded.image.diff_ids) == 2
    run = pydock_cli("run", "--rm", name, "sh", "-c", "cat /etc/motd; test -e /etc/group || echo gone")
    assert run.returncode == 0, run.stderr
    assert run.stdout == b"from docker\ngone\n"


def test_images_go_to_docker_and_back(store: Store, busybox_image: str, tmp_path: Path,
                                      docker_names: list[str]) -> None:
    name = f"pydock-test-archives-trip-{os.getpid()}:1"
    docker_names.append(name)
    [ours] = load(store, saved(store, "busybox"))  # normalised: pydock's own layer bytes
    store.tag(ours.image.id, name)
    assert docker("load", input=saved(store, name)).returncode == 0
    assert json.loads(docker("image", "inspect", name).stdout)[0]["Id"] == ours.image.id
    fresh = other(tmp_path)
    [back] = load(fresh, docker("save", name).stdout)
    assert back.image.id == ours.image.id and back.refs == (name,)


# -- bad input: one clear error, the store unchanged --------------------------------------------


@pytest.fixture
def good(tmp_path: Path) -> dict[str, bytes]:
    """The members of a pydock archive of the two-layer image (its own layers, exact ids)."""
    source = other(tmp_path, "source")
    own_layers(source)
    return members(saved(source, "multi:1"))


def layer_names(files: dict[str, bytes]) -> list[str]:
    return list(json.loads(files["manifest.json"])[0]["Layers"])


def refused(store: Store, data: bytes, match: str, *, pipe: bool = False) -> None:
    before = store_state(store.root)
    stream: Any = io.BufferedReader(_Unseekable(data)) if pipe else io.BytesIO(data)
    with pytest.raises(ArchiveError, match=match) as info:
        load_images(store, stream, source="bad.tar")
    assert str(info.value).startswith("bad.tar: ")
    assert store_state(store.root) == before
    assert list(store.tmp_dir.iterdir()) == []  # no spool, no pins left


class _Unseekable(io.RawIOBase):
    """A pipe-like stream (not seekable): the spooling path."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._data.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@pytest.mark.parametrize("pipe", [False, True], ids=["file", "pipe"])
def test_corrupt_and_truncated_archives(store: Store, busybox_image: str,
                                        good: dict[str, bytes], pipe: bool) -> None:
    whole = rebuild(good)
    refused(store, os.urandom(2048), "not a tar archive|corrupt", pipe=pipe)
    refused(store, whole[: len(whole) // 2], "truncated|unexpected end|corrupt", pipe=pipe)
    refused(store, gzip.compress(whole)[:-200], "corrupt", pipe=pipe)
    refused(store, rebuild({"hello": b"x"}), "neither manifest.json nor index.json", pipe=pipe)
    refused(store, rebuild(good | {"manifest.json": b"[{"}), "manifest.json.*not valid JSON",
            pipe=pipe)


def test_missing_blobs(store: Store, busybox_image: str, good: dict[str, bytes]) -> None:
    files = dict(good)
    del files[layer_names(good)[1]]
    refused(store, rebuild(files), "layer .* is missing from the archive")
    config = json.loads(good["manifest.json"])[0]["Config"]
    refused(store, rebuild({k: v for k, v in good.items() if k != config}),
            "image config .* is missing")
    layout = {k: v for k, v in good.items() if k not in ("manifest.json", config)}
    refused(store, rebuild(layout), "is missing from the archive")


def test_digest_mismatches(store: Store, busybox_image: str, good: dict[str, bytes]) -> None:
    config = json.loads(good["manifest.json"])[0]["Config"]
    doc = json.loads(good[config])
    doc["config"]["Cmd"] = ["evil"]
    refused(store, rebuild(good | {config: json.dumps(doc).encode()}),
            "does not match its digest")
    # the second layer's content differs from the config's diff_id: the first, already
    # extracted, is removed again
    first, second = layer_names(good)
    refused(store, rebuild(good | {second: tar_bytes(f("other", b"content"))}),
            "layer content does not match its digest")
    # a right diff_id under a wrong blob name (an OCI layout checks both)
    layout = {k: v for k, v in good.items() if k != "manifest.json"}
    renamed = gzip.compress(good[second])
    refused(store, rebuild(layout | {second: renamed}), "does not match its digest|has .* bytes")


def test_path_escaping_entries(store: Store, busybox_image: str, good: dict[str, bytes]) -> None:
    refused(store, rebuild(good | {"../evil": b"x"}), "points outside the archive")
    refused(store, rebuild(good | {"/etc/evil": b"x"}), "points outside the archive")
    second = layer_names(good)[1]
    refused(store, rebuild(good | {second: b"-> ../../../etc/passwd"}), "outside the archive")
    # inside a layer: the layer is refused, the layers before it go again
    bad_layer = tar_bytes(f("../../escape", b"x"))
    files = dict(good)
    manifest = json.loads(good["manifest.json"])
    config = json.loads(good[manifest[0]["Config"]])
    config["rootfs"]["diff_ids"][1] = sha256(bad_layer)
    raw = json.dumps(config).encode()
    del files[manifest[0]["Config"]]
    files["blobs/sha256/" + sha256(raw)[7:]] = raw
    files[second] = bad_layer
    manifest[0]["Config"] = "blobs/sha256/" + sha256(raw)[7:]
    files["manifest.json"] = json.dumps(manifest).encode()
    refused(store, rebuild(files), "layer .*'..'")


def test_bad_manifests(store: Store, busybox_image: str, good: dict[str, bytes]) -> None:
    manifest = json.loads(good["manifest.json"])
    short = [manifest[0] | {"Layers": manifest[0]["Layers"][:1]}]
    refused(store, rebuild(good | {"manifest.json": json.dumps(short).encode()}),
            "lists 1 layers, its config .* has 2 diff_ids")
    tagged = [manifest[0] | {"RepoTags": ["Bad Name:1"]}]
    refused(store, rebuild(good | {"manifest.json": json.dumps(tagged).encode()}),
            "invalid reference format")
    config = manifest[0]["Config"]
    windows = json.loads(good[config]) | {"os": "windows"}
    raw = json.dumps(windows).encode()
    files = {k: v for k, v in good.items() if k != config}
    files["blobs/sha256/" + sha256(raw)[7:]] = raw
    files["manifest.json"] = json.dumps(
        [manifest[0] | {"Config": "blobs/sha256/" + sha256(raw)[7:]}]).encode()
    refused(store, rebuild(files), "windows image")
