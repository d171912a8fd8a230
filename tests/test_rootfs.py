"""A container's filesystem from the host: diff, export, cp both ways, commit (real kernel)."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

import pytest
from conftest import pydock_cli
from pydock.backends.native import rootfs
from pydock.errors import ContainerError
from pydock.store import Store

pytestmark = pytest.mark.usefixtures("no_leaks")


def host_mounts(store_dir: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(store_dir) in line]


def my_children() -> list[int]:
    """Live processes whose parent is this test process and that were not there when the
    test began (a session-scoped registry server is no leak), other than session monitors."""
    return [pid for pid in _children() if pid not in _BEFORE]


def _children() -> list[int]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and comm != "pydock-monitor" and fields[0] != "Z":
            out.append(int(pid))
    return out


@pytest.fixture(autouse=True)
def _children_before() -> None:
    """What ran before each test (services of other modules' fixtures) is not its leak."""
    _BEFORE.clear()
    _BEFORE.update(_children())


_BEFORE: set[int] = set()


def exited(backend, script: str):  # type: ignore[no-untyped-def]
    """A container that ran ``sh -c script`` and exited 0."""
    c = backend.run("busybox", command=["sh", "-c", script])
    assert c.wait(30).exit_code == 0, c.logs()
    return c


def running(backend, script: str):  # type: ignore[no-untyped-def]
    """A container that ran ``script`` and now sleeps."""
    c = backend.run("busybox", command=["sh", "-c", f"{script}; echo ready; exec sleep 1000"])
    deadline = time.monotonic() + 10
    while b"ready" not in c.logs()[0]:
        assert time.monotonic() < deadline, c.logs()
        time.sleep(0.01)
    return c


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def read_member(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


def tar_of(*entries: tuple[str, bytes | None, dict[str, object]]) -> io.BytesIO:
    """A tar in memory: (name, data or None for a dir, extra TarInfo attributes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, attrs in entries:
            info = tarfile.TarInfo(name)
            if data is None and "type" not in attrs:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            for key, value in attrs.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


# -- diff --------------------------------------------------------------------------------------


def test_diff_reports_added_changed_and_deleted_like_docker(backend) -> None:
    c = exited(backend, "echo x > /new; echo y >> /etc/passwd; rm /etc/group; "
                        "mkdir -p /tmp/d/e; touch /tmp/d/e/f; echo h >> /etc/hosts")
    assert rootfs.diff(c) == [
        ("C", "/etc"), ("D", "/etc/group"), ("C", "/etc/passwd"), ("A", "/new"),
        ("C", "/tmp"), ("A", "/tmp/d"), ("A", "/tmp/d/e"), ("A", "/tmp/d/e/f"),
    ]
    c.remove()


def test_diff_of_a_directory_deleted_and_made_again(backend) -> None:
    c = exited(backend, "rm -rf /home; mkdir /home; touch /home/x; rm -r /usr")
    assert rootfs.diff(c) == [
        ("C", "/home"), ("D", "/home/app"), ("A", "/home/x"), ("D", "/usr")]
    c.remove()


def test_diff_of_a_new_container_is_empty_and_of_a_running_one_is_live(backend) -> None:
    created = backend.create("busybox", command=["true"])
    assert rootfs.diff(created) == []
    created.remove()
    c = running(backend, "touch /root/live")
    assert rootfs.diff(c) == [("C", "/root"), ("A", "/root/live")]
    c.remove(force=True)


# -- export ------------------------------------------------------------------------------------


def test_export_of_a_stopped_container_is_the_merged_rootfs(backend, store_dir) -> None:
    c = exited(backend, "echo new > /new; rm /etc/group")
    out = io.BytesIO()
    rootfs.export(c, out)
    names = members(out.getvalue())
    assert {"bin/busybox", "bin/sh", "etc/passwd", "new", "proc", "dev", "sys"} <= set(names)
    assert "etc/group" not in names
    assert names["bin/sh"].issym() and names["bin/sh"].linkname == "busybox"
    assert read_member(out.getvalue(), "new") == b"new\n"
    assert not host_mounts(store_dir)
    c.remove()


def test_export_of_a_running_container_leaves_out_its_mounts(backend, store_dir) -> None:
    c = running(backend, "echo live > /live")
    out = io.BytesIO()
    rootfs.export(c, out)
    names = members(out.getvalue())
    assert read_member(out.getvalue(), "live") == b"live\n"
    assert names["proc"].isdir() and names["dev"].isdir()
    assert not [n for n in names if n.startswith(("proc/", "sys/", "dev/"))]
    assert names["etc/hosts"].size == 0  # the init layer's mount point, not the bound file
    assert not host_mounts(store_dir)
    c.remove(force=True)


# -- copy out ----------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["stopped", "running"])
def test_copy_out_a_file_and_a_directory(backend, store_dir, state) -> None:
    script = "mkdir /data; echo one > /data/1; ln -s 1 /data/link"
    c = exited(backend, script) if state == "stopped" else running(backend, script)
    out = io.BytesIO()
    rootfs.copy_out(c, "/data/1", out)
    assert list(members(out.getvalue())) == ["1"]
    assert read_member(out.getvalue(), "1") == b"one\n"

    out = io.BytesIO()
    rootfs.copy_out(c, "/data", out)
    names = members(out.getvalue())
    assert sorted(names) == ["data", "data/1", "data/link"]
    assert names["data/link"].issym() and names["data/link"].linkname == "1"

    assert rootfs.get_file(c, "/data/link") == b"one\n"
    assert rootfs.stat_path(c, "/data") == rootfs.PathInfo(
        name="data", kind="directory", size=rootfs.stat_path(c, "/data").size,  # type: ignore[union-attr]
        mode=0o40755, link_target="", is_dir=True)
    assert rootfs.stat_path(c, "/nope") is None
    with pytest.raises(ContainerError, match=f"Could not find the file /nope in container {c.name}"):
        rootfs.copy_out(c, "/nope", io.BytesIO())
    with pytest.raises(ContainerError, match="Could not find the file /data/2"):
        rootfs.get_file(c, "/data/2")
    assert not host_mounts(store_dir)
    assert my_children() == []
    c.remove(force=True)


def test_copy_out_of_a_running_container_sees_its_volumes(backend, tmp_path) -> None:
    from pydock.models import Mount

    (tmp_path / "vol").mkdir()
    (tmp_path / "vol" / "f").write_text("from host")
    c = running(backend, "true")
    c.remove(force=True)
    c = backend.run("busybox", command=["sleep", "1000"],
                    mounts=[Mount(target="/vol", source=str(tmp_path / "vol"))])
    assert rootfs.get_file(c, "/vol/f") == b"from host"
    c.remove(force=True)


# -- copy in -----------------------------------------------------------------------------------


def test_copy_into_a_running_container(backend, store_dir) -> None:
    c = running(backend, "true")
    rootfs.put_file(c, "/tmp/in.txt", b"data", mode=0o600)
    result = c.exec(["sh", "-c", "cat /tmp/in.txt; stat -c ' %a %u' /tmp/in.txt"])
    assert result.stdout == b"data 600 0\n"
    rootfs.copy_in(c, tar_of(("dir", None, {}), ("dir/f", b"x", {"uid": 1000, "gid": 1000})),
                   "/root", archive=True)
    assert c.exec(["stat", "-c", "%u:%g", "/root/dir/f"]).stdout == b"1000:1000\n"
    assert ("A", "/tmp/in.txt") in rootfs.diff(c)
    assert not host_mounts(store_dir)
    c.remove(force=True)


def test_copy_into_a_stopped_container_persists_in_its_layer(backend, store_dir) -> None:
    c = exited(backend, "true")
    rootfs.copy_in(c, tar_of(("app", None, {}), ("app/run.sh", b"echo hi\n",
                                                 {"mode": 0o755, "uid": 1000})), "/")
    rootfs.put_file(c, "/etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
    assert rootfs.get_file(c, "/app/run.sh") == b"echo hi\n"
    assert rootfs.diff(c) == [("A", "/app"), ("A", "/app/run.sh"), ("C", "/etc"),
                              ("C", "/etc/passwd")]
    st = (c.dir.upper / "app" / "run.sh").stat()
    assert (st.st_mode & 0o777, st.st_uid) == (0o755, 0)  # owned by root unless archive
    assert not host_mounts(store_dir)
    assert not list(c.dir.path.glob(".cpwork-*"))
    assert my_children() == []
    c.remove()


def test_copy_in_refuses_entries_escaping_the_destination(backend, store_dir) -> None:
    c = exited(backend, "mkdir /dest")
    for bad in (tar_of(("../evil", b"x", {})), tar_of(("/abs", b"x", {})),
                tar_of(("a/../../evil", b"x", {}))):
        with pytest.raises(ContainerError, match="escapes /dest"):
            rootfs.copy_in(c, bad, "/dest")
    through_link = tar_of(("link", None, {"type": tarfile.SYMTYPE, "linkname": "/etc"}),
                          ("link/pwned", b"x", {}))
    with pytest.raises(ContainerError, match="symlink out of /dest"):
        rootfs.copy_in(c, through_link, "/dest")
    hardlink = tar_of(("h", None, {"type": tarfile.LNKTYPE, "linkname": "../etc/passwd"}))
    with pytest.raises(ContainerError, match="escapes /dest"):
        rootfs.copy_in(c, hardlink, "/dest")
    assert rootfs.stat_path(c, "/evil") is None
    assert rootfs.stat_path(c, "/etc/pwned") is None
    assert rootfs.stat_path(c, "/dest/link") is not None  # extracted before the bad entry
    with pytest.raises(ContainerError, match="Could not find the file /missing"):
        rootfs.copy_in(c, tar_of(("f", b"x", {})), "/missing")
    with pytest.raises(ContainerError, match="not a directory"):
        rootfs.copy_in(c, tar_of(("f", b"x", {})), "/etc/passwd")
    assert not host_mounts(store_dir)
    c.remove()


# -- commit ------------------------------------------------------------------------------------


def test_commit_of_a_stopped_container(backend, store_dir) -> None:
    c = exited(backend, "echo v1 > /data; rm /etc/group; echo MARK >> /etc/hosts")
    base = Store(store_dir).image("busybox")
    image = rootfs.commit(c, ref="snap:1", changes=['CMD ["cat", "/data"]'], message="data")
    assert image.diff_ids[:-1] == base.diff_ids and len(image.diff_ids) == 2
    assert "snap:1" in image.tags
    assert image.config.cmd == ("cat", "/data")
    assert not any(e.startswith("HOSTNAME=") for e in image.config.env)

    new = backend.run("snap:1")
    assert new.wait(30).exit_code == 0
    assert new.logs()[0] == b"v1\n"
    new.remove()
    script = "test -e /etc/group || echo gone; grep -c MARK /etc/hosts || true"
    check = backend.run("snap:1", command=["sh", "-c", script])
    check.wait(30)
    assert check.logs()[0].split() == [b"gone", b"0"]  # /etc/hosts was not committed
    check.remove()
    old = backend.run("busybox", command=["cat", "/data"])
    assert old.wait(30).exit_code == 1  # the original image is unchanged
    old.remove()
    assert Store(store_dir).image("busybox").id == base.id
    c.remove()


def test_commit_of_a_running_container_keeps_its_command(backend, store_dir) -> None:
    c = running(backend, "echo live > /live")
    image = rootfs.commit(c)
    assert image.tags == ()
    assert image.config.cmd == ("sh", "-c", "echo live > /live; echo ready; exec sleep 1000")
    assert c.status.value == "running"
    new = backend.run(image.id, command=["cat", "/live"])
    new.wait(30)
    assert new.logs()[0] == b"live\n"
    new.remove()
    c.remove(force=True)


def test_commit_rejects_a_bad_reference_before_doing_anything(backend, store_dir) -> None:
    c = exited(backend, "true")
    before = len(Store(store_dir).images())
    with pytest.raises(Exception, match="invalid reference format"):
        rootfs.commit(c, ref="Bad Name")
    assert len(Store(store_dir).images()) == before
    c.remove()


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_cp_diff_export_commit(backend, store_dir, tmp_path) -> None:
    c = exited(backend, "mkdir /srv; echo a > /srv/a")
    host = tmp_path / "host"
    host.mkdir()
    # container -> host: a directory into an existing directory goes inside it
    r = pydock_cli("cp", f"{c.name}:/srv", str(host))
    assert r.returncode == 0, r.stderr
    assert (host / "srv" / "a").read_text() == "a\n"
    assert b"Successfully copied" in r.stderr
    # ... and to a new name
    r = pydock_cli("cp", "-q", f"{c.name}:/srv/a", str(host / "renamed"))
    assert r.returncode == 0 and (host / "renamed").read_text() == "a\n" and not r.stderr
    # host -> container: into an existing dir, and as a new name
    (host / "site").mkdir()
    (host / "site" / "index.html").write_text("hello")
    assert pydock_cli("cp", str(host / "site"), f"{c.name}:/srv").returncode == 0
    assert pydock_cli("cp", str(host / "site"), f"{c.name}:/www").returncode == 0
    assert rootfs.get_file(c, "/srv/site/index.html") == b"hello"
    assert rootfs.get_file(c, "/www/index.html") == b"hello"
    # tar streams both ways
    r = pydock_cli("cp", f"{c.name}:/srv/a", "-")
    assert read_member(r.stdout, "a") == b"a\n"
    r = pydock_cli("cp", "-", f"{c.name}:/srv", input=tar_of(("b", b"b", {})).getvalue())
    assert r.returncode == 0 and rootfs.get_file(c, "/srv/b") == b"b"
    r = pydock_cli("cp", f"{c.name}:/nope", str(host))
    assert r.returncode == 1
    assert f"Could not find the file /nope in container {c.name}" in r.stderr.decode()

    r = pydock_cli("diff", c.name)
    assert r.stdout.decode().splitlines() == [
        "A /srv", "A /srv/a", "A /srv/b", "A /srv/site", "A /srv/site/index.html",
        "A /www", "A /www/index.html"]

    r = pydock_cli("export", "-o", str(tmp_path / "fs.tar"), c.name)
    assert r.returncode == 0, r.stderr
    assert "www/index.html" in members((tmp_path / "fs.tar").read_bytes())

    r = pydock_cli("commit", "-c", "ENV MODE=prod", "-m", "site", c.name, "site:v1")
    assert r.returncode == 0, r.stderr
    image_id = r.stdout.decode().strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    image = Store(store_dir).image("site:v1")
    assert image.id == image_id and "MODE=prod" in image.config.env
    assert not host_mounts(store_dir)
    c.remove()


def test_cli_cp_errors(backend, store_dir) -> None:
    c = exited(backend, "true")
    r = pydock_cli("cp", "/etc/hostname", "/tmp/x")
    assert r.returncode == 2 and b"CONTAINER:PATH" in r.stderr
    r = pydock_cli("cp", f"{c.name}:/etc", f"{c.name}:/tmp")
    assert r.returncode == 2 and b"between containers" in r.stderr
    r = pydock_cli("cp", "/etc/hostname", f"{c.name}:/nodir/")
    assert r.returncode == 2 and b"must exist" in r.stderr
    r = pydock_cli("cp", "/etc", f"{c.name}:/etc/passwd")
    assert r.returncode == 2 and b"cannot copy a directory to a file" in r.stderr
    c.remove()
