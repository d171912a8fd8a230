"""The image store: layout, lookups, atomic imports, commit layers, tags, rmi, gc, concurrency."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydock.archive import write_layer_tar
from pydock.errors import ImageNotFound, LayerError, StoreError, UsageError
from pydock.models import ImageConfig
from pydock.store import Store
from tarhelp import d, f, sha256, snapshot, store_state, sym, tar_bytes

CONFIG = ImageConfig(cmd=("sh",), env=("PATH=/bin",))


@pytest.fixture
def store(store_dir: Path) -> Store:
    return Store(store_dir)


def small_tar(text: bytes = b"hello") -> bytes:
    return tar_bytes(d("etc"), f("etc/motd", text), d("tmp", mode=0o1777))


def test_default_root_reads_the_environment_when_called(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PYDOCK_STORE", str(tmp_path / "explicit"))
    assert Store.default_root() == tmp_path / "explicit"
    monkeypatch.delenv("PYDOCK_STORE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Store.default_root() == tmp_path / "xdg/pydock"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Store.default_root() == tmp_path / "home/.cache/pydock"
    assert Store(None).root == tmp_path / "home/.cache/pydock"


def test_import_lays_out_the_store(store: Store, busybox_tar: Path) -> None:
    with open(busybox_tar, "rb") as fh:
        image = store.import_tar(fh, config=CONFIG, ref="busybox", comment="from test")
    diff_id = sha256(busybox_tar.read_bytes())
    assert image.diff_ids == (diff_id,)
    assert image.tags == ("busybox:latest",)
    short = diff_id.removeprefix("sha256:")[:16]
    assert store.layer_names(image) == [short]
    assert store.layer_path(diff_id) == store.layers_dir / short
    assert (store.layers_dir / short / "bin/busybox").is_file()
    meta = json.loads((store.layers_dir / f"{short}.json").read_bytes())
    assert meta == {"diff_id": diff_id, "size": image.size} and image.size > 1000
    config_bytes = (store.root / "images" / f"{image.id[7:]}.json").read_bytes()
    assert image.id == "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    assert json.loads((store.root / "tags.json").read_bytes()) == {"busybox:latest": image.id}
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700  # no setuid binaries for others
    for path in (store.layers_dir, store.layers_dir / "empty"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert stat.S_IMODE((store.layers_dir / short).stat().st_mode) == 0o755
    assert (store.layers_dir / "empty").is_dir() and not os.listdir(store.layers_dir / "empty")
    assert (store.root / "containers").is_dir() and os.listdir(store.tmp_dir) == []


def test_image_config_document(store: Store) -> None:
    image = store.import_tar(io.BytesIO(small_tar()), config=CONFIG, comment="msg")
    doc = store.config_document(image)
    assert doc["os"] == "linux" and doc["architecture"] == image.architecture
    assert doc["created"].endswith("Z") and doc["created"] == image.created
    assert doc["config"] == {"Cmd": ["sh"], "Env": ["PATH=/bin"]}
    assert doc["rootfs"] == {"type": "layers", "diff_ids": [sha256(small_tar())]}
    assert doc["history"] == [{"created": image.created, "comment": "msg"}]
    assert image.config == CONFIG


def test_lookup_by_name_id_hex_and_prefix(store: Store) -> None:
    image = store.import_tar(io.BytesIO(small_tar()), config=CONFIG, ref="app:1.0")
    hexid = image.id.removeprefix("sha256:")
    for ref in ("app:1.0", image.id, hexid, hexid[:12], hexid[:4]):
        assert store.image(ref).id == image.id, ref
    for ref in ("app", "app:2.0", hexid[:3], "sha256:" + "0" * 64, "0" * 64, "Bad Name"):
        with pytest.raises(ImageNotFound):
            store.image(ref)
    assert [i.id for i in store.images()] == [image.id]


def test_layerless_image_uses_the_empty_dir(store: Store) -> None:
    image = store.create_image(ImageConfig(), [], history_comment="scratch")
    assert store.layer_names(image) == ["empty"] and image.size == 0
    assert store.config_document(image)["history"][0]["empty_layer"] is True


def test_missing_layer_is_reported(store: Store) -> None:
    with pytest.raises(StoreError, match="not in the store"):
        store.create_image(ImageConfig(), ["sha256:" + "ab" * 32])
    with pytest.raises(StoreError, match="invalid layer diff_id"):
        store.create_image(ImageConfig(), ["md5:abc"])


def make_upper(path: Path) -> Path:
    """A directory as an overlay upper dir looks after a RUN step."""
    path.mkdir()
    (path / "new").write_text("new file")
    os.mknod(path / "deleted", stat.S_IFCHR, os.makedev(0, 0))
    (path / "opaque").mkdir()
    os.setxattr(path / "opaque", "trusted.overlay.opaque", b"y")
    os.setxattr(path / "opaque", "trusted.overlay.origin", b"\x00junk")
    (path / "etc").mkdir()
    (path / "etc/hosts").write_text("127.0.0.1 injected")
    os.utime(path / "etc", (1_500_000_000, 1_500_000_000))  # an old mtime, to be kept
    return path


def test_add_layer_dir_snapshots_an_upper_dir(store: Store, tmp_path: Path) -> None:
    upper = make_upper(tmp_path / "upper")
    base = store.import_tar(io.BytesIO(small_tar()), config=CONFIG, ref="base")
    diff_id = store.add_layer_dir(upper, exclude=lambda rel: rel == "etc/hosts")
    layer = store.layer_path(diff_id)
    assert stat.S_ISCHR(os.lstat(layer / "deleted").st_mode)
    assert os.listxattr(layer / "opaque") == ["trusted.overlay.opaque"]
    assert not (layer / "etc/hosts").exists() and (layer / "new").read_text() == "new file"
    assert int((layer / "etc").stat().st_mtime) == 1_500_000_000
    assert write_layer_tar(layer, None) == diff_id  # the stored dir re-tars to its diff_id
    assert store.layer_tar(diff_id, io.BytesIO()) == diff_id
    child = store.create_image(CONFIG, [*base.diff_ids, diff_id], base=base,
                               history_comment="commit")
    assert store.layer_names(child) == [diff_id[7:23], base.diff_ids[0][7:23]]
    history = store.config_document(child)["history"]
    assert len(history) == 2 and history[-1]["comment"] == "commit"
    assert "empty_layer" not in history[-1]
    assert not list(store.tmp_dir.glob("pin-*"))  # create_image released the pin


def test_add_layer_dir_dedupes(store: Store, tmp_path: Path) -> None:
    upper = make_upper(tmp_path / "upper")
    first = store.add_layer_dir(upper)
    assert store.add_layer_dir(upper) == first
    assert [p.name for p in store.layers_dir.iterdir() if p.is_dir()].count(first[7:23]) == 1
    assert len([p for p in store.layers_dir.iterdir() if p.is_dir()]) == 2  # + empty


@pytest.mark.parametrize("data", [
    small_tar()[:700],
    b"\x1f\x8b garbage",
    tar_bytes(d("etc"), sym("etc/x", "/etc"), f("etc/x/passwd", b"pwned")),
    tar_bytes(f("../escape", b"x")),
], ids=["truncated", "bad-gzip", "symlink-escape", "dotdot"])
def test_failed_import_leaves_the_store_unchanged(store: Store, data: bytes) -> None:
    store.import_tar(io.BytesIO(small_tar()), config=CONFIG, ref="keep")
    before = store_state(store.root)
    with pytest.raises(LayerError):
        store.import_tar(io.BytesIO(data), config=CONFIG, ref="keep")
    assert store_state(store.root) == before
    assert os.listdir(store.tmp_dir) == []
    assert not Path("/etc/x").exists()


def test_import_with_a_bad_name_fails_before_extracting(store: Store) -> None:
    with pytest.raises(UsageError, match="invalid reference"):
        store.import_tar(io.BytesIO(small_tar()), config=CONFIG, ref="Bad Name")
    assert store.images() == [] and os.listdir(store.tmp_dir) == []


def test_same_layer_twice_is_stored_once(store: Store) -> None:
    one = store.import_tar(io.BytesIO(small_tar()), config=CONFIG, ref="one")
    two = store.import_tar(io.BytesIO(small_tar()), config=CONFIG, ref="two")
    assert one.diff_ids == two.diff_ids
    assert sorted(p.name for p in store.layers_dir.iterdir() if p.is_dir()) == sorted(
        ["empty", one.diff_ids[0][7:23]])


def test_tag_and_untag(store: Store) -> None:
    image = store.import_tar(io.BytesIO(small_tar()), config=CONFIG)
    assert image.tags == ()
    store.tag(image.short_id, "app:1")
    store.tag("app:1", "registry.local:5000/team/app:latest")
    assert store.image(image.id).tags == ("app:1", "registry.local:5000/team/app:latest")
    store.untag("app:1")
    assert store.image(image.id).tags == ("registry.local:5000/team/app:latest",)
    with pytest.raises(ImageNotFound):
        store.untag("app:1")
    with pytest.raises(UsageError):
        store.tag(image.id, "UPPER")


def test_rmi_by_name_untags_and_deletes_the_last_tag(store: Store) -> None:
    image = store.import_tar(io.BytesIO(small_tar()), config=CONFIG, ref="a")
    store.tag(image.id, "b")
    assert store.remove_image("a") == ["Untagged: a:latest"]
    assert store.image(image.id).tags == ("b:latest",)
    lines = store.remove_image("b")
    assert lines == ["Untagged: b:latest", f"Deleted: {image.id}", f"Deleted: {image.diff_ids[0]}"]
    assert store.images() == []
    assert not store.layer_path(image.diff_ids[0]).exists()
    assert not store.layer_path(image.diff_ids[0]).with_suffix(".json").exists()


def test_rmi_by_id_with_several_tags_needs_force(store: Store) -> None:
    image = store.import_tar(io.BytesIO(small_tar()), config=CONFIG, ref="a")
    store.tag(image.id, "b")
    with pytest.raises(StoreError, match="must be forced.*multiple repositories"):
        store.remove_image(image.short_id)
    assert store.image(image.id).tags == ("a:latest", "b:latest")
    lines = store.remove_image(image.short_id, force=True)
    assert lines[:3] == ["Untagged: a:latest", "Untagged: b:latest", f"Deleted: {image.id}"]
    with pytest.raises(ImageNotFound):
        store.image(image.id)


def test_rmi_keeps_layers_other_images_use(store: Store) -> None:
    one = store.import_tar(io.BytesIO(small_tar()), config=CONFIG, ref="one")
    two = store.import_tar(io.BytesIO(small_tar()), config=ImageConfig(), ref="two")
    assert store.remove_image("one") == ["Untagged: one:latest", f"Deleted: {one.id}"]
    assert store.layer_names(store.image("two")) == [two.diff_ids[0][7:23]]


def use_image(store: Store, image_id: str, name: str = "c1") -> None:
    (store.root / "containers" / name).mkdir(parents=True)
    (store.root / "containers" / name / "config.json").write_text(json.dumps({"image_id": image_id}))


def test_rmi_refuses_an_image_a_container_uses(store: Store) -> None:
    image = store.import_tar(io.BytesIO(small_tar()), config=CONFIG, ref="a")
    use_image(store, image.id)
    assert store.images_in_use() == {image.id}
    with pytest.raises(StoreError, match="used by a container"):
        store.remove_image("a")
    assert store.image("a").id == image.id
    assert store.remove_image("a", force=True) == ["Untagged: a:latest"]
    assert store.image(image.id).tags == ()  # kept for the container, dangling
    assert store.layer_path(image.diff_ids[0]).is_dir()


def test_a_removed_container_waiting_for_deletion_holds_no_image(store: Store) -> None:
    """remove() renames a container's directory to ``.<id>.rm`` and the monitor deletes it
    when idle: meanwhile its image may already go (``pydock rm c; pydock rmi image``)."""
    image = store.import_tar(io.BytesIO(small_tar()), config=CONFIG, ref="a")
    use_image(store, image.id, name=f".{'c' * 64}.rm")
    assert store.images_in_use() == set()
    assert store.remove_image("a")[0] == "Untagged: a:latest"


def test_gc_removes_unreferenced_layers_and_stale_tmp(store: Store, tmp_path: Path) -> None:
    image = store.import_tar(io.BytesIO(small_tar()), config=CONFIG, ref="keep")
    upper = make_upper(tmp_path / "upper")
    # a commit whose process died before create_image: its layer is pinned by a dead pid
    script = "import sys; from pydock.store import Store; " \
        "print(Store(sys.argv[1]).add_layer_dir(sys.argv[2]))"
    orphan = subprocess.run([sys.executable, "-c", script, str(store.root), str(upper)],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert store.layer_path(orphan).is_dir() and list(store.tmp_dir.glob("pin-*"))
    dead_pid = subprocess.Popen(["true"])  # a pid that has exited
    dead_pid.wait()
    (store.tmp_dir / f"import-{dead_pid.pid}-leftover").mkdir()
    (store.tmp_dir / f"import-{os.getpid()}-inflight").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other/file").write_text("pinned")
    live = store.add_layer_dir(tmp_path / "other")  # pinned by this live process
    report = store.gc()
    assert report.layers == (orphan,)
    assert f"import-{dead_pid.pid}-leftover" in report.tmp_entries
    assert report.bytes_freed > 0
    assert not store.layer_path(orphan).exists()
    assert store.layer_path(image.diff_ids[0]).is_dir() and store.layer_path(live).is_dir()
    assert (store.tmp_dir / f"import-{os.getpid()}-inflight").is_dir()
    assert store.image("keep").id == image.id
    assert store.gc().layers == ()


CONCURRENT_IMPORT = textwrap.dedent("""
    import sys
    from pydock.models import ImageConfig
    from pydock.store import Store
    with open(sys.argv[2], "rb") as fh:
        image = Store(sys.argv[1]).import_tar(fh, config=ImageConfig(), ref=sys.argv[3])
    print(image.id)
""")


def test_concurrent_imports_share_one_layer(store: Store, busybox_tar: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT_IMPORT, str(store.root),
                          str(busybox_tar), f"img:{n}"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
        for n in range(4)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [r[1] for r in results]
    ids = [out.decode().strip() for out, _ in results]
    layer_dirs = [p for p in store.layers_dir.iterdir() if p.is_dir() and p.name != "empty"]
    assert len(layer_dirs) == 1
    tags = json.loads((store.root / "tags.json").read_bytes())
    assert tags == {f"img:{n}": ids[n] for n in range(4)}
    assert os.listdir(store.tmp_dir) == []
    assert snapshot(layer_dirs[0])["bin/busybox"][1] == 0o755
