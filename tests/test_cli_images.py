"""The image commands of the ``pydock`` CLI, run as a user runs them (a real subprocess)."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import pydock_cli
from tarhelp import d, f, store_state, sym, tar_bytes

ID_LINE = re.compile(r"sha256:[0-9a-f]{64}\n")


def ok(*args: str, input: bytes | None = None) -> str:
    result = pydock_cli(*args, input=input)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    return result.stdout.decode()


def fails(*args: str, input: bytes | None = None) -> str:
    """Run a command that must fail cleanly; returns its one-line error message."""
    result = pydock_cli(*args, input=input)
    stderr = result.stderr.decode()
    assert result.returncode != 0
    assert "Traceback" not in stderr
    assert stderr.startswith("pydock: error: ") and stderr.count("\n") == 1, stderr
    return stderr


def inspect(ref: str) -> dict:
    docs = json.loads(ok("image", "inspect", ref))
    assert isinstance(docs, list) and len(docs) == 1
    return docs[0]


def test_import_from_a_file_and_list_it(store_dir: Path, busybox_tar: Path) -> None:
    out = ok("import", str(busybox_tar), "busybox:1.0")
    assert ID_LINE.fullmatch(out)
    listing = ok("images").splitlines()
    assert listing[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    row = listing[1]
    assert row.startswith("busybox") and " 1.0 " in row and out[7:19] in row
    assert re.search(r"(Less than a second|\d+ seconds?) ago", row) and row.endswith("MB")
    assert ok("images", "-q") == out[7:19] + "\n"
    assert ok("images", "-q", "--no-trunc") == out
    assert out.strip() in ok("images", "--no-trunc")
    assert ok("image", "ls", "-q") == out[7:19] + "\n"


def test_import_gzip_from_stdin(store_dir: Path, busybox_tar: Path) -> None:
    out = ok("import", "-", "fromstdin", input=gzip.compress(busybox_tar.read_bytes()))
    doc = inspect("fromstdin")
    assert doc["Id"] == out.strip()
    assert doc["Comment"] == "Imported from -"
    assert doc["RootFS"]["Layers"][0].startswith("sha256:")


def test_import_message_and_untagged_image(store_dir: Path) -> None:
    out = ok("import", "-m", "my message", "-", input=tar_bytes(f("x", b"1")))
    doc = inspect(out[7:19])
    assert doc["Comment"] == "my message" and doc["RepoTags"] == []
    assert "<none>" in ok("images").splitlines()[1]


def test_inspect_has_docker_field_names(store_dir: Path, busybox_tar: Path) -> None:
    ok("import", str(busybox_tar), "bb")
    doc = inspect("bb")
    for key in ("Id", "RepoTags", "Created", "Architecture", "Os", "Size", "Config", "RootFS"):
        assert key in doc, key
    assert set(doc["Config"]) >= {"Env", "Cmd", "Entrypoint", "WorkingDir", "User",
                                  "ExposedPorts", "Labels", "Volumes", "StopSignal",
                                  "Healthcheck", "OnBuild"}
    assert doc["RepoTags"] == ["bb:latest"] and doc["Os"] == "linux"
    assert doc["Size"] > 1_000_000 and doc["Created"].endswith("Z")
    assert doc["RootFS"]["Type"] == "layers" and len(doc["RootFS"]["Layers"]) == 1


CHANGES = [
    ("ENV A=1 B=\"two words\"", "Env", ["A=1", "B=two words"]),
    ("ENV LEGACY some value", "Env", ["LEGACY=some value"]),
    ('CMD ["sh", "-c", "echo hi"]', "Cmd", ["sh", "-c", "echo hi"]),
    ("CMD echo hi", "Cmd", ["/bin/sh", "-c", "echo hi"]),
    ('ENTRYPOINT ["/bin/busybox"]', "Entrypoint", ["/bin/busybox"]),
    ("ENTRYPOINT exec app --flag", "Entrypoint", ["/bin/sh", "-c", "exec app --flag"]),
    ("WORKDIR /srv/app", "WorkingDir", "/srv/app"),
    ("USER app:app", "User", "app:app"),
    ("EXPOSE 80 53/udp 8000-8002", "ExposedPorts",
     {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}, "8002/tcp": {}}),
    ('LABEL org.example.name="my app" tier=web', "Labels",
     {"org.example.name": "my app", "tier": "web"}),
    ('VOLUME ["/data", "/logs"]', "Volumes", {"/data": {}, "/logs": {}}),
    ("STOPSIGNAL SIGINT", "StopSignal", "SIGINT"),
    ("HEALTHCHECK --interval=5s --retries=2 CMD wget -q localhost", "Healthcheck",
     {"Test": ["CMD-SHELL", "wget -q localhost"], "Interval": 5_000_000_000, "Retries": 2}),
    ("ONBUILD RUN echo child", "OnBuild", ["RUN echo child"]),
]


@pytest.mark.parametrize(("change", "key", "expected"), CHANGES, ids=[c[0] for c in CHANGES])
def test_import_change(store_dir: Path, change: str, key: str, expected: object) -> None:
    ok("import", "--change", change, "-", "changed", input=tar_bytes(f("x")))
    assert inspect("changed")["Config"][key] == expected


def test_several_changes_in_order(store_dir: Path) -> None:
    ok("import", "-c", "ENV A=1", "-c", "ENV B=$A", "-c", 'CMD ["sh"]', "-c",
       'ENTRYPOINT ["/init"]', "-c", "WORKDIR /a", "-c", "WORKDIR b", "-", "multi",
       input=tar_bytes(f("x")))
    config = inspect("multi")["Config"]
    assert config["Env"] == ["A=1", "B=1"]
    assert config["Cmd"] == ["sh"] and config["Entrypoint"] == ["/init"]  # CMD survives
    assert config["WorkingDir"] == "/a/b"


@pytest.mark.parametrize("change", ["FROM busybox", "RUN true", "ENV ONLYKEY",
                                    "EXPOSE 70000", "STOPSIGNAL SIGNOPE", "CMD"])
def test_bad_change_is_a_clean_error(store_dir: Path, change: str) -> None:
    message = fails("import", "--change", change, "-", "x", input=tar_bytes(f("x")))
    assert repr(change) in message
    assert ok("images", "-q") == ""


def test_tag_and_rmi(store_dir: Path) -> None:
    image_id = ok("import", "-", "one", input=tar_bytes(f("x"))).strip()
    assert ok("tag", "one", "two:v2") == ""
    assert inspect(image_id)["RepoTags"] == ["one:latest", "two:v2"]
    assert "referenced in multiple repositories" in fails("rmi", image_id[7:19])
    assert ok("rmi", "one") == "Untagged: one:latest\n"
    out = ok("rmi", "two:v2")
    assert out.splitlines()[:2] == ["Untagged: two:v2", f"Deleted: {image_id}"]
    assert ok("images", "-q") == ""


def test_rmi_force_and_partial_failure(store_dir: Path) -> None:
    image_id = ok("import", "-", "a", input=tar_bytes(f("x"))).strip()
    ok("tag", "a", "b")
    result = pydock_cli("rmi", "-f", image_id[7:19], "missing")
    assert result.returncode == 1
    assert result.stdout.decode().splitlines()[:3] == [
        "Untagged: a:latest", "Untagged: b:latest", f"Deleted: {image_id}"]
    assert "image not found: missing" in result.stderr.decode()


def test_inspect_unknown_image(store_dir: Path) -> None:
    result = pydock_cli("image", "inspect", "nope")
    assert result.returncode == 1 and json.loads(result.stdout) == []
    assert "image not found: nope" in result.stderr.decode()


@pytest.mark.parametrize("blob", [
    tar_bytes(d("etc"), f("etc/data", b"z" * 4000))[:2000],
    gzip.compress(tar_bytes(f("data", os.urandom(40000))))[:3000],
    b"not a tarball at all" * 30,
], ids=["truncated-tar", "truncated-gzip", "garbage"])
def test_corrupt_import_is_one_line_and_changes_nothing(
    store_dir: Path, tmp_path: Path, blob: bytes
) -> None:
    ok("import", "-", "keep", input=tar_bytes(f("x")))
    before = store_state(store_dir)
    path = tmp_path / "bad.tar"
    path.write_bytes(blob)
    message = fails("import", str(path), "keep")
    assert "corrupt layer archive" in message
    assert store_state(store_dir) == before
    assert list((store_dir / "tmp").iterdir()) == []


def test_escaping_import_is_refused_and_changes_nothing(store_dir: Path, tmp_path: Path) -> None:
    ok("import", "-", "keep", input=tar_bytes(f("x")))
    before = store_state(store_dir)
    evil = tar_bytes(sym("link", str(tmp_path)), f("link/pwned", b"x"))
    assert "goes through the symlink link" in fails("import", "-", "evil", input=evil)
    assert not (tmp_path / "pwned").exists()
    assert store_state(store_dir) == before


def test_missing_file_and_bad_name(store_dir: Path, tmp_path: Path) -> None:
    assert "cannot read" in fails("import", str(tmp_path / "absent.tar"))
    assert "invalid reference format" in fails("import", "-", "Bad:Name:x",
                                                input=tar_bytes(f("x")))


def test_global_store_option(tmp_path: Path, store_dir: Path) -> None:
    other = tmp_path / "other-store"
    ok("--store", str(other), "import", "-", "elsewhere", input=tar_bytes(f("x")))
    assert json.loads((other / "tags.json").read_text()).keys() == {"elsewhere:latest"}
    assert ok("images", "-q") == ""  # the default (PYDOCK_STORE) store is untouched


def test_gc_reports_what_it_removed(store_dir: Path) -> None:
    ok("import", "-", "keep", input=tar_bytes(f("keep")))
    # an orphan layer: a commit whose process died before it made an image
    script = ("import sys; from pydock.store import Store; "
              "print(Store(sys.argv[1]).add_layer_dir(sys.argv[2]))")
    upper = store_dir.parent / "upper"
    upper.mkdir()
    (upper / "file").write_text("orphan")
    orphan = subprocess.run([sys.executable, "-c", script, str(store_dir), str(upper)],
                            capture_output=True, text=True, check=True).stdout.strip()
    out = ok("gc")
    assert f"Deleted layer: {orphan}" in out and "Total reclaimed space: 6B" in out
    assert ok("gc").splitlines() == ["Total reclaimed space: 0B"]
    assert len(inspect("keep")["RootFS"]["Layers"]) == 1


def test_help_describes_every_command() -> None:
    out = ok("--help")
    for command in ("import", "images", "tag", "rmi", "image", "gc"):
        assert re.search(rf"^\s+{command}\s+\S", out, re.MULTILINE), command
    assert "--change" in ok("import", "--help")
