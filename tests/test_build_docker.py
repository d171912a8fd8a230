"""Side by side with a real Docker daemon: the same Dockerfile and context must give the same
image config and the same root filesystem (paths, types, modes, owners, contents, links)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BUSYBOX, needs_root, require_service
from pydock import Store
from pydock.builder import BuildOptions, build

CONFIG_FIELDS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Labels",
                 "Volumes", "StopSignal", "Healthcheck", "OnBuild", "Shell")

# Mount points and files the runtimes inject; neither belongs to the image.
IGNORED = ("etc/hosts", "etc/resolv.conf", "etc/hostname", ".dockerenv")


@pytest.fixture(scope="module")
def docker_client() -> Iterator[Any]:
    try:
        import docker
        client = docker.from_env()
        client.ping()
    except Exception:  # noqa: BLE001 - any failure means: no daemon to compare with
        client = None
    require_service(client is not None, "a Docker daemon")
    yield client
    client.close()


def merged_view(layer_tars: list[bytes]) -> dict[str, tuple[Any, ...]]:
    """Apply OCI layer tars in order (whiteouts included): path -> comparable attributes."""
    view: dict[str, tuple[Any, ...]] = {}
    for data in layer_tars:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = tar.getmembers()
            for m in members:  # opaque markers first: they clear what lower layers had
                name = m.name.lstrip("./").rstrip("/")
                base = name.rsplit("/", 1)[-1]
                if base == ".wh..wh..opq":
                    parent = name.rsplit("/", 1)[0] if "/" in name else ""
                    for key in [k for k in view if k.startswith(f"{parent}/")]:
                        del view[key]
            for m in members:
                name = m.name.lstrip("./").rstrip("/")
                if not name:
                    continue
                base = name.rsplit("/", 1)[-1]
                if base == ".wh..wh..opq":
                    continue
                if base.startswith(".wh."):
                    gone = name[: -len(base)] + base[4:]
                    for key in [k for k in view if k == gone or k.startswith(f"{gone}/")]:
                        del view[key]
                    continue
                if m.isfile():
                    f = tar.extractfile(m)
                    content = hashlib.sha256(f.read() if f else b"").hexdigest()
                elif m.issym():
                    content = f"-> {m.linkname}"
                elif m.islnk():
                    content = f"hardlink {m.linkname.lstrip('./')}"
                else:
                    content = ""
                kind = "file" if m.islnk() else ("dir" if m.isdir() else "sym" if m.issym()
                                                 else "file" if m.isfile() else str(m.type))
                view[name] = (kind, oct(m.mode & 0o7777), m.uid, m.gid, content)
    for name in list(view):
        if name in IGNORED or any(name.startswith(f"{p}/") for p in IGNORED):
            del view[name]
    return view


def resolve_hardlinks(view: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    """A hard link's content is its target's (which of the two names a tar stores as the
    link is an implementation detail)."""
    out = {}
    for name, (kind, mode, uid, gid, content) in view.items():
        if isinstance(content, str) and content.startswith("hardlink "):
            content = view.get(content[len("hardlink "):], (None,) * 5)[4]
        out[name] = (kind, mode, uid, gid, content)
    return out


def docker_image(client: Any, ctx: Path, tag: str) -> tuple[dict[str, Any], list[bytes]]:
    client.images.build(path=str(ctx), tag=tag, rm=True, forcerm=True, nocache=True)
    try:
        raw = b"".join(client.images.get(tag).save(named=True))
    finally:
        client.images.remove(tag, force=True)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        layers = [tar.extractfile(name).read() for name in manifest["Layers"]]  # type: ignore[union-attr]
    return config, layers


def pydock_image(store: Store, ctx: Path) -> tuple[dict[str, Any], list[bytes]]:
    from pydock.backends.native.backend import NativeBackend
    with NativeBackend(store) as backend:
        image = build(store, BuildOptions(context=str(ctx)), backend=backend).image
    layers = []
    for diff_id in image.diff_ids:
        buf = io.BytesIO()
        store.layer_tar(diff_id, buf)
        layers.append(buf.getvalue())
    return store.config_document(image), layers


CASES = {
    "files_and_metadata": """\
        FROM scratch
        COPY busybox /bin/busybox
        RUN ["/bin/busybox", "--install", "-s", "/bin"]
        ENV PATH=/bin GREETING="hello world"
        RUN mkdir -p /etc /home/app && \\
            printf 'root:x:0:0:root:/root:/bin/sh\\napp:x:1000:1000::/home/app:/bin/sh\\n' \\
                > /etc/passwd && printf 'root:x:0:\\napp:x:1000:\\n' > /etc/group
        COPY --chown=app:app files/ /srv/files/
        COPY a.txt b.txt /multi/
        COPY a.txt /renamed
        WORKDIR /work/dir
        RUN touch x && chmod 4755 x && mkdir -m 1777 sticky && ln -s x sym && ln x hard
        RUN rm -rf /srv/files/sub && mkdir /srv/files/sub && echo new > /srv/files/sub/n
        RUN rm /renamed && echo "$GREETING" > /greeting
        USER app
        EXPOSE 80 53/udp 7000-7001
        VOLUME /data
        LABEL a=b "with space"="c d"
        STOPSIGNAL SIGQUIT
        HEALTHCHECK --interval=3s --timeout=2s --retries=4 CMD true
        ONBUILD RUN true
        SHELL ["/bin/sh", "-ec"]
        ENTRYPOINT ["/bin/sh"]
        CMD ["-c", "echo hi"]
        """,
    "multi_stage_and_args": """\
        ARG BASE=scratch
        FROM ${BASE} AS tools
        COPY busybox /bin/busybox
        RUN ["/bin/busybox", "--install", "-s", "/bin"]

        FROM tools AS build
        ARG VERSION=1.0
        ENV PATH=/bin
        RUN mkdir -p /out/lib && echo "v$VERSION" > /out/version && chmod 640 /out/version

        FROM tools
        ENV PATH=/bin
        COPY --from=build /out /opt/app/
        COPY --from=build /out/version /version
        ENTRYPOINT echo entry
        """,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_image_as_docker_build(docker_client: Any, tmp_path: Path, store_dir: Path,
                                    case: str) -> None:
    needs_root()
    ctx = tmp_path / "ctx"
    (ctx / "files/sub").mkdir(parents=True)
    shutil.copy(BUSYBOX, ctx / "busybox")
    (ctx / "a.txt").write_text("a\n")
    (ctx / "b.txt").write_text("b\n")
    (ctx / "files/one").write_text("1\n")
    (ctx / "files/sub/two").write_text("2\n")
    (ctx / "files/sub/two").chmod(0o600)
    (ctx / "Dockerfile").write_text(textwrap.dedent(CASES[case]))

    docker_config, docker_layers = docker_image(docker_client, ctx,
                                                f"pydock-test/build-{uuid.uuid4().hex[:8]}")
    ours_config, ours_layers = pydock_image(Store(store_dir), ctx)

    for key in CONFIG_FIELDS:
        theirs = docker_config["config"].get(key) or None
        ours = ours_config["config"].get(key) or None
        assert ours == theirs, f"config {key}: pydock {ours!r}, docker {theirs!r}"
    assert len(ours_layers) == len(docker_layers)
    theirs_fs = resolve_hardlinks(merged_view(docker_layers))
    ours_fs = resolve_hardlinks(merged_view(ours_layers))
    only_docker = {k: v for k, v in theirs_fs.items() if ours_fs.get(k) != v}
    only_ours = {k: v for k, v in ours_fs.items() if theirs_fs.get(k) != v}
    assert only_docker == only_ours == {}, (only_docker, only_ours)
