"""The host base image pydock:host: a read-only view of this host's system and Python (real
kernel, native engine); its safety: nothing a container or the store does reaches the host."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import pydock_cli
from pydock import HostViewError, host_image
from pydock.backends.native import rootfs
from pydock.backends.native.hostview import VIEW_LINK
from pydock.errors import ContainerError, StoreError
from pydock.models import ImageConfig
from pydock.ready import HttpProbe, PortProbe, wait_ready
from pydock.sources.host import HOST_IMAGE, REFERENCE_ID, describe_host, resolve_base
from pydock.store import Store

pytestmark = pytest.mark.usefixtures("no_leaks")

PREFIX = os.path.realpath(sys.base_prefix)


def run(backend, *argv: str, image: str = HOST_IMAGE) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    """Run ``argv`` in a new container of ``image``; (exit code, stdout, stderr)."""
    c = backend.run(image, command=list(argv))
    try:
        code = c.wait(60).exit_code
        out, err = c.logs()
    finally:
        c.remove(force=True)
    return code, out.decode(), err.decode()


def host_file(*candidates: str) -> Path:
    for path in candidates:
        if os.path.isfile(path) and not os.path.islink(path):
            return Path(path)
    pytest.skip(f"none of {candidates} is a regular file on this host")


def host_mountinfo() -> str:
    with open("/proc/self/mountinfo") as f:
        return f.read()


# -- the image ---------------------------------------------------------------------------------


def test_python_in_a_container_is_the_hosts(backend) -> None:
    code, out, err = run(backend, "python3", "-c", "import sys, json; print(sys.version)")
    assert (code, err) == (0, "")
    assert out == sys.version + "\n"
    image = backend.store.image(HOST_IMAGE)
    assert image.config.cmd == ("python3",)
    assert image.config.working_dir == "/"
    path = image.config.env_dict()["PATH"].split(":")
    assert path[0] == os.path.join(PREFIX, "bin") or PREFIX == "/usr"
    labels = image.config.labels_dict
    assert labels["org.pydock.python.version"] == sys.version.split()[0]
    assert "view of this host" in labels["org.pydock.host-view"]
    assert "pydock-host" not in host_mountinfo()  # the view lives in the container's namespace


def test_limited_and_on_disk_containers_see_the_host_view(backend, store_dir, monkeypatch
                                                          ) -> None:
    # with limits: cloned into a cgroup (no zygote); on disk: the upper dir below / too
    c = backend.run(HOST_IMAGE, command=["python3", "-c", "print('limited')"],
                    memory=256 << 20)
    assert c.wait(60).exit_code == 0 and c.logs()[0] == b"limited\n"
    c.remove()
    from pydock.backends.native.backend import NativeBackend
    monkeypatch.setenv("PYDOCK_CONTAINERS", "disk")
    other = store_dir.parent / "disk-store"
    disk = NativeBackend(other)
    try:
        c = disk.run(HOST_IMAGE, command=["sh", "-c", "echo on-disk > /usr/f; cat /usr/f"])
        assert c.wait(60).exit_code == 0, c.logs()
        assert c.logs()[0] == b"on-disk\n"
        assert str(c.dir.path).startswith(str(other / "containers"))
        c.remove()
    finally:
        disk.close()
    assert not os.path.lexists("/usr/f")


def test_host_image_is_idempotent_and_made_once_by_concurrent_processes(store_dir) -> None:
    procs = [subprocess.Popen([sys.executable, "-m", "pydock", "--store", str(store_dir),
                               "host-image"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(3)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    ids = {out.decode().strip() for out, _ in outputs}
    assert len(ids) == 1
    store = Store(store_dir)
    assert [i.id for i in store.images()] == list(ids)
    assert host_image(store).id in ids
    assert store.image(HOST_IMAGE).tags == (HOST_IMAGE,)


def test_store_image_and_the_builder_resolver_make_it_on_first_use(store_dir) -> None:
    store = Store(store_dir)
    assert store.lookup(HOST_IMAGE) is None
    made = store.image("pydock:host")
    assert made.diff_ids[0] == REFERENCE_ID
    assert resolve_base(store, "pydock:host").id == made.id
    with pytest.raises(StoreError):
        resolve_base(store, "not-here:1")


def test_the_mask_hides_private_places_and_secrets() -> None:
    view = describe_host()
    mask = {e.path: e for e in view.mask}
    for secret in ("etc/shadow", "etc/gshadow"):
        assert mask[secret].kind == "whiteout"
    for top in os.listdir("/"):
        if top in ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            assert top not in mask or top == "etc"
        else:
            assert top in mask, top
            assert mask[top].kind == "whiteout" or mask[top].opaque, top
    for top in ("root", "home", "tmp", "var", "run", "opt"):
        assert mask[top].opaque
    hidden = {e.path: e.kind for e in describe_host(hide=["/usr/local/a-store"]).mask}
    assert hidden["usr/local/a-store"] == "whiteout"  # a store below /usr stays out of sight
    if PREFIX.split("/")[1] not in ("usr", "etc"):
        assert mask[PREFIX.strip("/")].redirect == PREFIX
        assert view.exposed == (PREFIX,)


# -- isolation ---------------------------------------------------------------------------------


def test_writes_stay_in_their_container_and_never_reach_the_host(backend) -> None:
    usr_file = host_file("/usr/lib/os-release", "/usr/share/common-licenses/GPL-3")
    etc_file = host_file("/etc/debian_version", "/etc/issue", "/etc/passwd")
    before = (usr_file.read_bytes(), etc_file.read_bytes())
    new = f"pydock-test-{uuid.uuid4().hex[:8]}"
    script = (f"echo changed >> {usr_file} && echo new > /usr/lib/{new} && "
              f"echo changed >> {etc_file} && echo new > /etc/{new} && "
              f"tail -n1 {usr_file} {etc_file} && cat /usr/lib/{new} /etc/{new}")
    code, out, err = run(backend, "sh", "-c", script)
    assert code == 0, err
    assert out.count("changed") == 2 and out.count("new") == 2
    assert (usr_file.read_bytes(), etc_file.read_bytes()) == before
    assert not os.path.lexists(f"/usr/lib/{new}") and not os.path.lexists(f"/etc/{new}")
    code, out, _ = run(backend, "sh", "-c", f"cat {usr_file} {etc_file}; "
                                            f"ls /usr/lib/{new} /etc/{new}")
    assert code != 0  # the second container sees neither the changes nor the new files
    assert out.encode() == before[0] + before[1]


def test_private_places_of_the_host_are_not_visible(backend, store_dir) -> None:
    shown_in_root = {p.split("/")[2] for p in describe_host().exposed if p.startswith("/root/")}
    hidden_host_entry = next((n for n in sorted(os.listdir("/root"))
                              if n not in shown_in_root), None)
    probe = (
        "import os, json\n"
        "def ls(p):\n"
        "    return sorted(os.listdir(p)) if os.path.isdir(p) else None\n"
        f"print(json.dumps({{'root': ls('/root'), 'home': ls('/home'), 'tmp': ls('/tmp'),\n"
        f"    'work': os.path.lexists('/work'), 'store': os.path.lexists({str(store_dir)!r}),\n"
        f"    'hidden': os.path.lexists('/root/' + {hidden_host_entry or ''!r}),\n"
        "    'shadow': os.path.lexists('/etc/shadow'), 'gshadow': os.path.lexists('/etc/gshadow'),\n"
        "    'var_lib': ls('/var/lib'), 'passwd_root': open('/etc/passwd').read()"
        ".startswith('root:')}))\n")
    code, out, err = run(backend, "python3", "-c", probe)
    assert code == 0, err
    seen = json.loads(out)
    assert seen["root"] == sorted(shown_in_root)
    assert seen["home"] == [] and seen["tmp"] == [] and seen["var_lib"] == []
    assert not seen["work"] and not seen["store"] and not seen["shadow"] and not seen["gshadow"]
    if hidden_host_entry is not None:
        assert not seen["hidden"]
    assert seen["passwd_root"]


def test_a_stdlib_http_server_serves_inside(backend) -> None:
    c = backend.run(HOST_IMAGE, command=["python3", "-m", "http.server", "8000",
                                         "--bind", "127.0.0.1", "--directory", "/usr"])
    try:
        wait_ready(c, [PortProbe(8000), HttpProbe(8000, "/")], timeout=30)
        result = c.exec(["python3", "-c", "import urllib.request as u; "
                         "print(u.urlopen('http://127.0.0.1:8000/').read().decode())"])
        assert result.exit_code == 0
        assert "bin/" in result.stdout.decode()
    finally:
        c.remove(force=True)


# -- commit, diff, cp, export --------------------------------------------------------------------


def test_commit_makes_a_layer_of_the_containers_changes_only(backend) -> None:
    c = backend.run(HOST_IMAGE, command=["sh", "-c", "mkdir /app && "
                                         "echo 'print(6 * 7)' > /app/x.py"])
    assert c.wait(60).exit_code == 0
    assert rootfs.diff(c) == [("A", "/app"), ("A", "/app/x.py")]
    image = rootfs.commit(c, ref="app:1")
    c.remove()
    base = backend.store.image(HOST_IMAGE)
    assert image.diff_ids[:-1] == base.diff_ids
    layer = backend.store.layer_path(image.diff_ids[-1])
    found = sorted(str(p.relative_to(layer)) for p in layer.rglob("*"))
    assert found == ["app", "app/x.py"]
    assert run(backend, "python3", "/app/x.py", image="app:1")[:2] == (0, "42\n")


def test_diff_and_cp_of_a_stopped_container_see_the_host_view(backend) -> None:
    etc_file = host_file("/etc/debian_version", "/etc/issue", "/etc/passwd")
    os_py = os.path.join(PREFIX, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}",
                         "os.py")
    c = backend.run(HOST_IMAGE, command=["sh", "-c", f"echo x >> {etc_file}; echo >> {os_py}"])
    assert c.wait(60).exit_code == 0
    changes = dict((path, kind) for kind, path in rootfs.diff(c))
    assert changes[str(etc_file)] == "C" and changes[os_py] == "C"
    assert rootfs.get_file(c, "/etc/passwd") == Path("/etc/passwd").read_bytes()
    rootfs.put_file(c, "/usr/lib/pydock-put.txt", b"inside")
    assert rootfs.get_file(c, "/usr/lib/pydock-put.txt") == b"inside"
    assert not os.path.lexists("/usr/lib/pydock-put.txt")
    c.remove()


def test_the_host_view_cannot_be_exported_or_saved(backend, store_dir, tmp_path) -> None:
    c = backend.run(HOST_IMAGE, command=["true"])
    assert c.wait(60).exit_code == 0
    with pytest.raises(ContainerError, match="host base layer cannot be exported"):
        rootfs.export(c, io.BytesIO())
    r = pydock_cli("export", c.name, "-o", str(tmp_path / "x.tar"))
    assert r.returncode != 0 and b"cannot be exported" in r.stderr and b"Traceback" not in r.stderr
    c.remove()
    store = backend.store
    for diff_id in store.image(HOST_IMAGE).diff_ids:
        with pytest.raises(HostViewError, match="the host base layer cannot be exported"):
            store.layer_tar(diff_id, io.BytesIO())
    r = pydock_cli("save", HOST_IMAGE, "-o", str(tmp_path / "host.tar"))
    assert r.returncode != 0 and b"cannot be exported" in r.stderr and b"Traceback" not in r.stderr


# -- the store never deletes or writes through a host reference -------------------------------


def test_rmi_and_gc_of_the_host_image_leave_the_host_untouched(backend, store_dir) -> None:
    assert run(backend, "true")[0] == 0
    store = backend.store
    link = store.layer_path(REFERENCE_ID)
    assert link.is_symlink() and os.readlink(link) == VIEW_LINK  # never a link to /
    watched = ["/", "/usr", "/usr/bin", "/etc", PREFIX, os.path.join(PREFIX, "bin")]
    before = {p: sorted(os.listdir(p)) for p in watched}
    mask = store.layer_path(store.image(HOST_IMAGE).diff_ids[1])
    lines = store.remove_image(HOST_IMAGE)
    assert f"Deleted: {REFERENCE_ID}" in lines
    store.gc()
    assert not os.path.lexists(link) and not os.path.lexists(mask)
    assert {p: sorted(os.listdir(p)) for p in watched} == before
    assert os.path.isfile(os.path.join(PREFIX, "bin", "python3"))
    assert list((store_dir / "runtime" / "host" / "view").iterdir()) == []


def _linked_dir(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A directory standing in for the host, with files that must survive."""
    target = tmp_path / "not-the-host"
    (target / "sub").mkdir(parents=True)
    files = {"top": b"keep", "sub/inner": b"keep too"}
    for name, data in files.items():
        (target / name).write_bytes(data)
    return target, files


def _intact(target: Path, files: dict[str, bytes]) -> bool:
    return all((target / name).read_bytes() == data for name, data in files.items())


FAKE = "sha256:" + "ab" * 32


def test_rmi_of_a_host_reference_removes_only_the_link(store_dir, tmp_path) -> None:
    target, files = _linked_dir(tmp_path)
    store = Store(store_dir)
    store.add_host_layer(FAKE, link=str(target))
    assert store.layer_path(FAKE).is_symlink() and store.is_host_layer(FAKE)
    image = store.create_image(ImageConfig(), [FAKE])
    store.tag(image.id, "linked:1")
    assert f"Deleted: {FAKE}" in store.remove_image("linked:1")
    assert not os.path.lexists(store.layer_path(FAKE))
    assert _intact(target, files)


def test_gc_of_an_orphan_host_reference_removes_only_the_link(store_dir, tmp_path) -> None:
    target, files = _linked_dir(tmp_path)
    store = Store(store_dir)
    store.add_host_layer(FAKE, link=str(target))
    image = store.create_image(ImageConfig(), [FAKE])  # uses it: the pin goes
    os.unlink(store.images_dir / f"{image.id.removeprefix('sha256:')}.json")  # an orphan
    report = store.gc()
    assert FAKE in report.layers
    assert not os.path.lexists(store.layer_path(FAKE))
    assert _intact(target, files)


def test_other_store_paths_refuse_or_unlink_a_host_reference(store_dir, tmp_path) -> None:
    from pydock.store import _remove_path
    target, files = _linked_dir(tmp_path)
    store = Store(store_dir)
    link = store.layer_path(store.add_host_layer(FAKE, link=str(target)))
    with pytest.raises(HostViewError, match="cannot be exported"):
        store.layer_tar(FAKE, io.BytesIO())
    with pytest.raises(HostViewError, match="symlink"):
        store.add_layer_dir(link)
    assert store.add_host_layer(FAKE, link=str(target)) == FAKE  # exists: a no-op
    assert store._discard_layer(link.name) == 0
    assert not os.path.lexists(link) and _intact(target, files)
    store.add_host_layer(FAKE, link=str(target))
    _remove_path(link)
    assert not os.path.lexists(link) and _intact(target, files)
    dangling = store.layer_path(store.add_host_layer(FAKE, link=str(tmp_path / "gone")))
    assert store._discard_layer(dangling.name) == 0 and not os.path.lexists(dangling)


# -- a virtual environment shows only when asked -------------------------------------------------


def test_a_venv_is_hidden_unless_asked(backend, store_dir, tmp_path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(venv)], check=True, timeout=120)
    vpy = str(venv / "bin" / "python")
    for name, flags in (("plain:1", []), ("withvenv:1", ["--venv"])):
        r = subprocess.run([vpy, "-m", "pydock", "--store", str(store_dir), "host-image",
                            "--name", name, *flags], capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr
    real = os.path.realpath(venv)
    code, out, _ = run(backend, "python3", "-c", "import sys; print(sys.prefix)",
                       image="withvenv:1")
    assert (code, out) == (0, real + "\n")
    code, out, _ = run(backend, "python3", "-c",
                       f"import os, sys; print(os.path.lexists({real!r}), sys.prefix)",
                       image="plain:1")
    assert (code, out) == (0, f"False {PREFIX}\n")
