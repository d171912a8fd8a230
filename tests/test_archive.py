"""Layer archives: extraction (fidelity, whiteouts, escapes, corruption) and deterministic tars."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from pydock.archive import copy_tree, extract_layer, tree_size, write_layer_tar
from pydock.errors import LayerError
from tarhelp import Entry, d, f, hard, sha256, snapshot, sym, tar_bytes

OPAQUE = "trusted.overlay.opaque"


class ReadOnly:
    """A stream with nothing but ``read`` (like a pipe): extraction must not seek."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._buf.read(size)


def extract(data: bytes, dest: Path) -> str:
    dest.mkdir(exist_ok=True)
    return extract_layer(ReadOnly(data), dest)  # type: ignore[arg-type]


def rich_layer() -> bytes:
    """A layer using every feature: modes, owners, links, devices, xattrs, whiteouts."""
    return tar_bytes(
        d("bin"),
        f("bin/su", b"#!su\n", mode=0o4755, uid=0, gid=0),
        f("bin/wall", b"wall", mode=0o2755, gid=5),
        d("tmp", mode=0o1777),
        d("home"),
        d("home/app", mode=0o750, uid=1000, gid=2000),
        f("home/app/data", b"x" * 5000, mode=0o600, uid=1000, gid=2000, mtime=1_234_567_890),
        hard("home/app/data.link", "home/app/data"),
        sym("home/app/etc", "/etc", uid=1000, gid=2000),
        sym("home/app/rel", "../../bin/su"),
        Entry("dev", tarfile.DIRTYPE, mode=0o755),
        Entry("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
        Entry("dev/loop0", tarfile.BLKTYPE, mode=0o660, gid=6, dev=(7, 0)),
        Entry("dev/fifo", tarfile.FIFOTYPE, mode=0o620),
        f("caps", b"cap", mode=0o755,
          xattrs={"security.capability": b"\x01\x00\x00\x02\x00\x20\x00\x00" + b"\0" * 12,
                  "user.note": b"\xff\x00binary", "trusted.mine": b"t"}),
        d("opaque"),
        f("opaque/.wh..wh..opq"),
        f("opaque/kept", b"k"),
        f(".wh.gone"),
        d("var"),
        f("var/.wh.log"),
    )


@pytest.mark.parametrize("compress", [None, gzip.compress, bz2.compress, lzma.compress],
                         ids=["plain", "gzip", "bzip2", "xz"])
def test_diff_id_is_sha256_of_the_uncompressed_stream(tmp_path: Path, compress) -> None:
    data = rich_layer()
    blob = compress(data) if compress else data
    assert extract(blob, tmp_path / "layer") == sha256(data)
    assert (tmp_path / "layer/opaque/kept").read_bytes() == b"k"


def test_modes_owners_times_links_devices_xattrs_preserved(tmp_path: Path) -> None:
    root = tmp_path / "layer"
    extract(rich_layer(), root)

    def st(rel: str) -> os.stat_result:
        return os.lstat(root / rel)

    assert stat.S_IMODE(st("bin/su").st_mode) == 0o4755
    assert stat.S_IMODE(st("bin/wall").st_mode) == 0o2755 and st("bin/wall").st_gid == 5
    assert stat.S_IMODE(st("tmp").st_mode) == 0o1777
    data = st("home/app/data")
    assert (data.st_uid, data.st_gid, stat.S_IMODE(data.st_mode)) == (1000, 2000, 0o600)
    assert int(data.st_mtime) == 1_234_567_890
    assert int(st("home/app").st_mtime) == 1_600_000_000  # set after its children were made
    assert st("home/app/data.link").st_ino == data.st_ino and data.st_nlink == 2
    assert os.readlink(root / "home/app/etc") == "/etc"
    assert (st("home/app/etc").st_uid, st("home/app/etc").st_gid) == (1000, 2000)
    assert os.readlink(root / "home/app/rel") == "../../bin/su"
    null = st("dev/null")
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1
    assert os.minor(null.st_rdev) == 3 and stat.S_IMODE(null.st_mode) == 0o666
    assert stat.S_ISBLK(st("dev/loop0").st_mode) and st("dev/loop0").st_gid == 6
    assert stat.S_ISFIFO(st("dev/fifo").st_mode) and stat.S_IMODE(st("dev/fifo").st_mode) == 0o620
    caps = root / "caps"
    assert os.getxattr(caps, "user.note") == b"\xff\x00binary"
    assert os.getxattr(caps, "trusted.mine") == b"t"
    assert os.getxattr(caps, "security.capability")[:4] == b"\x01\x00\x00\x02"


def test_oci_whiteouts_become_overlay_whiteouts(tmp_path: Path) -> None:
    root = tmp_path / "layer"
    extract(rich_layer(), root)
    for rel in ("gone", "var/log"):
        st = os.lstat(root / rel)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0), rel
    assert os.getxattr(root / "opaque", OPAQUE) == b"y"
    names = {p.name for p in root.rglob("*")}
    assert not any(n.startswith(".wh.") for n in names)


def test_overlay_xattrs_in_the_tar_are_ignored(tmp_path: Path) -> None:
    data = tar_bytes(d("x", xattrs={"trusted.overlay.redirect": b"/etc", OPAQUE: b"y"}))
    extract(data, tmp_path / "layer")
    assert [n for n in os.listxattr(tmp_path / "layer/x") if n.startswith("trusted.overlay")] == []


def test_whiteout_round_trip_oci_to_overlay_to_oci(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    extract(rich_layer(), first)
    buf = io.BytesIO()
    diff_id = write_layer_tar(first, buf)
    assert diff_id == sha256(buf.getvalue())
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members[".wh.gone"].isreg() and members["var/.wh.log"].isreg()
    assert members["opaque/.wh..wh..opq"].isreg()
    assert not any("trusted.overlay" in k for m in members.values() for k in m.pax_headers)
    assert members["home/app/data.link"].islnk()
    assert members["home/app/data.link"].linkname == "home/app/data"
    assert extract(buf.getvalue(), second) == diff_id
    assert snapshot(second) == snapshot(first)


def test_write_layer_tar_is_deterministic_and_sorted(tmp_path: Path) -> None:
    root = tmp_path / "layer"
    extract(rich_layer(), root)
    one, two = io.BytesIO(), io.BytesIO()
    assert write_layer_tar(root, one) == write_layer_tar(root, two) == write_layer_tar(root, None)
    assert one.getvalue() == two.getvalue()
    with tarfile.open(fileobj=io.BytesIO(one.getvalue())) as tar:
        names = tar.getnames()
    assert names.index("bin") < names.index("bin/su") < names.index("bin/wall")
    assert names.index("opaque") + 1 == names.index("opaque/.wh..wh..opq")


def test_write_layer_tar_without_whiteout_conversion(tmp_path: Path) -> None:
    root = tmp_path / "layer"
    extract(rich_layer(), root)
    buf = io.BytesIO()
    write_layer_tar(root, buf, whiteouts=False)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["gone"].ischr() and ".wh.gone" not in members
    assert members["opaque"].pax_headers[f"SCHILY.xattr.{OPAQUE}"] == "y"


def test_write_layer_tar_exclude(tmp_path: Path) -> None:
    root = tmp_path / "layer"
    extract(rich_layer(), root)
    buf = io.BytesIO()
    write_layer_tar(root, buf, exclude=lambda rel: rel in ("home", "caps"))
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        names = tar.getnames()
    assert "bin/su" in names
    assert not [n for n in names if n.startswith("home") or n == "caps"]


def test_later_entry_replaces_earlier_one_without_following_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("safe")
    data = tar_bytes(sym("victim", str(outside / "victim")), f("victim", b"layer"),
                     f("dir", b"file"), d("dir"), f("dir/x", b"1"))
    root = tmp_path / "layer"
    extract(data, root)
    assert (outside / "victim").read_text() == "safe"
    assert not (root / "victim").is_symlink() and (root / "victim").read_bytes() == b"layer"
    assert (root / "dir/x").read_bytes() == b"1"


def test_missing_parent_directories_are_created(tmp_path: Path) -> None:
    root = tmp_path / "layer"
    extract(tar_bytes(f("./a/b/c", b"deep")), root)
    assert (root / "a/b/c").read_bytes() == b"deep"
    assert stat.S_IMODE(os.lstat(root / "a/b").st_mode) == 0o755


# case -> (entries given the outside directory, expected message)
ESCAPES: dict[str, tuple[Callable[[str], list[Entry]], str]] = {
    "absolute path": (lambda out: [f("/evil", b"x")], "absolute path"),
    "dot-dot": (lambda out: [f("a/../../evil", b"x")], "'..'"),
    "symlink parent absolute": (lambda out: [sym("a", out), f("a/evil", b"x")], "symlink"),
    "symlink parent relative": (
        lambda out: [d("s"), sym("s/up", "../.."), f("s/up/evil", b"x")], "symlink"),
    "whiteout through symlink": (lambda out: [sym("a", out), f("a/.wh.victim")], "symlink"),
    "opaque through symlink": (lambda out: [sym("a", out), f("a/.wh..wh..opq")], "symlink"),
    "hardlink absolute": (lambda out: [hard("evil", f"{out}/victim")], "absolute"),
    "hardlink dot-dot": (lambda out: [hard("evil", "../outside/victim")], "'..'"),
    "hardlink through symlink": (
        lambda out: [sym("a", out), hard("evil", "a/victim")], "symlink"),
    "hardlink to nothing": (lambda out: [hard("evil", "nowhere")], "not in this layer"),
}


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_escaping_entries_are_refused(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("safe")
    entries, reason = ESCAPES[case]
    with pytest.raises(LayerError, match=reason):
        extract(tar_bytes(*entries(str(outside))), tmp_path / "layer")
    assert os.listxattr(outside) == []
    assert sorted(os.listdir(outside)) == ["victim"]
    assert (outside / "victim").read_text() == "safe"
    assert os.stat(outside / "victim").st_nlink == 1
    assert not (tmp_path / "evil").exists()


def test_escape_error_names_the_entry(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match=r"layer entry 'a/b' goes through the symlink a"):
        extract(tar_bytes(sym("a", "/etc"), f("a/b")), tmp_path / "layer")


def _truncated_in_file() -> bytes:
    data = tar_bytes(f("big", b"y" * 20000), f("after"))
    return data[:3000]


def _truncated_at_header() -> bytes:
    data = tar_bytes(f("one", b"1" * 512), f("two", b"2"))
    return data[: 512 + 512]  # header and data of "one", then nothing


def _bad_header() -> bytes:
    data = bytearray(tar_bytes(f("one", b"1" * 512), f("two", b"2")))
    data[1024:1124] = b"\x07" * 100  # garbage where the second header starts
    return bytes(data)


def _corrupt_gzip() -> bytes:
    blob = bytearray(gzip.compress(os.urandom(50_000) + tar_bytes(f("x", b"1"))))
    blob[len(blob) // 2 : len(blob) // 2 + 64] = b"\0" * 64
    return bytes(blob)


CORRUPT = {
    "empty": b"",
    "garbage": b"this is not a tar archive" * 40,
    "truncated in file data": _truncated_in_file(),
    "truncated at a header": _truncated_at_header(),
    "bad header": _bad_header(),
    "truncated gzip": gzip.compress(tar_bytes(f("x", os.urandom(30000))))[:2000],
    "corrupt gzip": _corrupt_gzip(),
    "truncated xz": lzma.compress(tar_bytes(f("x", os.urandom(30000))))[:2000],
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_archives_raise_layer_error(tmp_path: Path, case: str) -> None:
    with pytest.raises(LayerError, match="^corrupt layer archive: "):
        extract(CORRUPT[case], tmp_path / "layer")


def test_zstd_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="zstd"):
        extract(b"\x28\xb5\x2f\xfd" + b"\0" * 100, tmp_path / "layer")


def test_copy_tree_is_exact(tmp_path: Path) -> None:
    src = tmp_path / "src"
    extract(rich_layer(), src)
    copy_tree(src, tmp_path / "dst")
    assert snapshot(tmp_path / "dst") == snapshot(src)
    assert os.getxattr(tmp_path / "dst/opaque", OPAQUE) == b"y"


def test_tree_size_counts_hardlinks_once(tmp_path: Path) -> None:
    root = tmp_path / "layer"
    extract(tar_bytes(f("a", b"x" * 1000), hard("b", "a"), f("c", b"yy"), sym("l", "abc")), root)
    assert tree_size(root) == 1000 + 2 + 3
