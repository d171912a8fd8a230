"""Side by side with a real Docker daemon: the same Dockerfile and context must give the same
image config, layer count, history and root filesystem (paths, types, modes, owners, contents,
links, deletions), also layer by layer.

Docker here is the classic builder (`docker build` with DOCKER_BUILDKIT=0: this machine has
no buildx).  Where pydock follows BuildKit instead, ``EXPECTED_DIFFERENCES`` names the
difference and the test checks that it is exactly that one (see README, "where pydock differs
from docker build")."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import textwrap
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
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

Entry = tuple[Any, ...]


@pytest.fixture(scope="module")
def docker_client() -> Iterator[Any]:
    try:
        import docker
        client = docker.from_env()
        client.ping()
    except Exception:  # noqa: BLE001 - any failure means: no daemon to compare with
        client = None
    require_service(client is not None and shutil.which("docker") is not None,
                    "a Docker daemon and the docker CLI")
    yield client
    client.close()


_BUILT: list[str] = []  # ids of the images docker_build made in the current test


@pytest.fixture
def docker_leaves_no_images(docker_client: Any) -> Iterator[None]:
    """The classic builder keeps each stage's image (untagged): remove, children first, the
    images this test's builds made that are still there untagged, so test runs do not pile
    them up in the daemon.  Only those: another xdist worker's build in progress has
    untagged images too."""
    import docker.errors

    _BUILT.clear()
    yield
    for image_id in reversed(_BUILT):
        try:
            if not docker_client.images.get(image_id).tags:
                docker_client.images.remove(image_id, force=True)
        except docker.errors.APIError:
            pass  # gone with its child already (ImageNotFound is an APIError)
    _BUILT.clear()


# -- reading images ------------------------------------------------------------------------------


def _entry(tar: tarfile.TarFile, m: tarfile.TarInfo) -> Entry:
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
    return (kind, oct(m.mode & 0o7777), m.uid, m.gid, content)


def _ignored(name: str) -> bool:
    return name in IGNORED or any(name.startswith(f"{p}/") for p in IGNORED)


def layer_view(data: bytes) -> dict[str, Entry]:
    """One layer tar as it is: path -> attributes; whiteouts and opaque markers as entries."""
    view: dict[str, Entry] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            name = m.name.lstrip("./").rstrip("/")
            if not name or _ignored(name):
                continue
            base = name.rsplit("/", 1)[-1]
            if base.startswith(".wh."):
                view[name] = ("whiteout",)
            else:
                view[name] = _entry(tar, m)
    return resolve_hardlinks(view)


def merged_view(layer_tars: list[bytes]) -> dict[str, Entry]:
    """Apply OCI layer tars in order (whiteouts included): path -> comparable attributes."""
    view: dict[str, Entry] = {}
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
                if name in view and not m.isdir():  # a file replacing a directory
                    for key in [k for k in view if k.startswith(f"{name}/")]:
                        del view[key]
                view[name] = _entry(tar, m)
    return resolve_hardlinks({k: v for k, v in view.items() if not _ignored(k)})


def resolve_hardlinks(view: dict[str, Entry]) -> dict[str, Entry]:
    """A hard link's content is its target's (which of the two names a tar stores as the
    link is an implementation detail)."""
    out = {}
    for name, attrs in view.items():
        content = attrs[-1]
        if len(attrs) == 5 and isinstance(content, str) and content.startswith("hardlink "):
            content = view.get(content[len("hardlink "):], (None,) * 5)[4]
            attrs = (*attrs[:4], content)
        out[name] = attrs
    return out


def _normalized_history(doc: dict[str, Any]) -> list[tuple[str, bool]]:
    """(created_by, empty_layer) of each history entry, content digests blanked."""
    out = []
    for h in doc.get("history", []):
        text = re.sub(r"(file|dir|multi):[0-9a-f]{64}", r"\1:<digest>", h.get("created_by", ""))
        out.append((text, bool(h.get("empty_layer"))))
    return out


def docker_build(client: Any, ctx: Path, tag: str, *, target: str | None = None,
                 build_args: Mapping[str, str] | None = None) -> None:
    argv = ["docker", "build", "--no-cache", "--rm", "--force-rm", "-t", tag]
    if target is not None:
        argv += ["--target", target]
    for key, value in (build_args or {}).items():
        argv += ["--build-arg", f"{key}={value}"]
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    proc = subprocess.run([*argv, str(ctx)], capture_output=True, env=env, timeout=600,
                          check=False)
    # each step's image: " ---> 5cfb54fdae5b" (not " ---> Running in <container>")
    _BUILT.extend(m.decode() for m in re.findall(rb"^ ---> ([0-9a-f]{12})$", proc.stdout,
                                                  re.MULTILINE))
    assert proc.returncode == 0, ("docker build failed:\n"
                                  + (proc.stdout + proc.stderr).decode(errors="replace"))


def docker_image(client: Any, ctx: Path, tag: str, *, target: str | None = None,
                 build_args: Mapping[str, str] | None = None
                 ) -> tuple[dict[str, Any], list[bytes]]:
    try:
        docker_build(client, ctx, tag, target=target, build_args=build_args)
        raw = b"".join(client.images.get(tag).save(named=True))
    finally:
        remove_docker_image(client, tag)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        layers = [tar.extractfile(name).read() for name in manifest["Layers"]]  # type: ignore[union-attr]
    return config, layers


def remove_docker_image(client: Any, tag: str) -> None:
    import docker.errors
    try:
        client.images.remove(tag, force=True)
    except docker.errors.ImageNotFound:
        pass


def pydock_image(store: Store, ctx: Path, *, target: str | None = None,
                 tags: tuple[str, ...] = (), build_args: Mapping[str, str] | None = None
                 ) -> tuple[dict[str, Any], list[bytes]]:
    from pydock.backends.native.backend import NativeBackend
    opts = BuildOptions(context=str(ctx), target=target, tags=tags,
                        build_args=dict(build_args or {}))
    with NativeBackend(store) as backend:
        image = build(store, opts, backend=backend).image
    layers = []
    for diff_id in image.diff_ids:
        buf = io.BytesIO()
        store.layer_tar(diff_id, buf)
        layers.append(buf.getvalue())
    return store.config_document(image), layers


# -- contexts ------------------------------------------------------------------------------------

PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "app:x:1000:1000::/home/app:/bin/sh\n"
          "svc:x:1500:1600::/srv:/bin/sh\n")
GROUP = "root:x:0:\napp:x:1000:\nsvc:x:1700:\ngrp1600:x:1600:\n"

# A scratch image with busybox, a shell and users (app 1000:1000; svc 1500 whose primary
# group 1600 is not the group named svc, 1700).
PRELUDE = """\
    FROM scratch
    COPY busybox /bin/busybox
    RUN ["/bin/busybox", "--install", "-s", "/bin"]
    ENV PATH=/bin
    COPY etc/ /etc/
    """


def base_context(ctx: Path) -> None:
    (ctx / "files/sub").mkdir(parents=True)
    shutil.copy(BUSYBOX, ctx / "busybox")
    (ctx / "a.txt").write_text("a\n")
    (ctx / "b.txt").write_text("b\n")
    (ctx / "files/one").write_text("1\n")
    (ctx / "files/sub/two").write_text("2\n")
    (ctx / "files/sub/two").chmod(0o600)
    (ctx / "etc").mkdir()
    (ctx / "etc/passwd").write_text(PASSWD)
    (ctx / "etc/group").write_text(GROUP)
    tree = ctx / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "f").write_text("f\n")
    (tree / "g").write_text("g\n")
    (tree / "sub/h").write_text("h\n")
    (tree / "g").chmod(0o640)
    (tree / "sub").chmod(0o700)
    tree.chmod(0o750)


def links_context(ctx: Path) -> None:
    links = ctx / "links"
    (links / "sub").mkdir(parents=True)
    (links / "target.txt").write_text("target\n")
    (links / "sub/f").write_text("in sub\n")
    os.symlink("target.txt", links / "sym")
    os.symlink("/etc/passwd", links / "abs")
    os.symlink("sub", links / "dirsym")
    os.symlink("missing", links / "dangling")
    (links / "hard1").write_text("hard\n")
    os.link(links / "hard1", links / "hard2")
    os.link(links / "hard1", links / "sub/hard3")


def modes_context(ctx: Path) -> None:
    modes = ctx / "modes"
    modes.mkdir()
    for name, mode in (("suid", 0o4755), ("sgid", 0o2755), ("both", 0o6711), ("f600", 0o600),
                       ("f700", 0o700), ("f777", 0o777), ("f444", 0o444), ("f000", 0o000),
                       ("suid-noexec", 0o4644), ("sgid-noexec", 0o2644), ("sgid-gx", 0o2610)):
        (modes / name).write_text(f"{name}\n")
        (modes / name).chmod(mode)
    for name, mode in (("sticky", 0o1777), ("dir700", 0o700), ("setgid-dir", 0o2775),
                       ("dir555", 0o555)):
        (modes / name).mkdir()
        (modes / name / "inside").write_text("x\n")
        (modes / name).chmod(mode)


def ignore_context(ctx: Path, ignore: str) -> None:
    for name in ("app.py", "a.log", "important.log", "sub/b.log", "sub/c.txt", "secret",
                 "sub/secret", "build/x", "build/keep.txt", "deep/tmp/x", "tmp/y",
                 "deep/er/z.txt", "docs/readme.md", "docs/drafts/d.md"):
        path = ctx / "ign" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name + "\n")
    (ctx / "ign/Dockerfile.in").write_text("not the Dockerfile\n")
    (ctx / ".dockerignore").write_text(textwrap.dedent(ignore))


def _tar_member(tar: tarfile.TarFile, name: str, *, kind: bytes = tarfile.REGTYPE,
                mode: int = 0o644, uid: int = 0, gid: int = 0, data: bytes = b"",
                link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid = kind, mode, uid, gid
    info.mtime = 1_600_000_000
    info.linkname = link
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def archives_context(ctx: Path) -> None:
    def fill(tar: tarfile.TarFile) -> None:
        _tar_member(tar, "top/", kind=tarfile.DIRTYPE, mode=0o750, uid=1000, gid=1000)
        _tar_member(tar, "top/owned", uid=123, gid=456, data=b"owned\n", mode=0o640)
        _tar_member(tar, "top/suid", mode=0o4755, data=b"suid\n")
        _tar_member(tar, "top/link", kind=tarfile.SYMTYPE, link="owned", uid=7, gid=8)
        _tar_member(tar, "top/hard", kind=tarfile.LNKTYPE, link="top/owned")
        _tar_member(tar, "noparent/deep/file", data=b"no parent entries\n", uid=1000, gid=1000)
        _tar_member(tar, "private/", kind=tarfile.DIRTYPE, mode=0o700)
        _tar_member(tar, "private/x", data=b"x\n", mode=0o600)

    with tarfile.open(ctx / "t.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        fill(tar)
    with tarfile.open(ctx / "t.tar.gz", "w:gz", format=tarfile.GNU_FORMAT) as tar:
        fill(tar)
    (ctx / "fake.tar").write_text("not an archive\n")


def onbuild_context(ctx: Path) -> None:
    (ctx / "Dockerfile.parent").write_text(textwrap.dedent(PRELUDE + """\
        RUN mkdir /onbuild
        ONBUILD COPY a.txt /onbuild/
        ONBUILD RUN echo triggered > /onbuild/ran
        ONBUILD ENV TRIGGERED=yes
        ONBUILD WORKDIR /onbuild
        CMD ["sh"]
        """))


# -- cases ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A Dockerfile (``{parent}`` names the image built first from ``Dockerfile.parent`` of
    the same context), what to add to the base context, the target stage, build args."""

    dockerfile: str
    setup: Callable[[Path], None] | None = None
    target: str | None = None
    parent: bool = False
    build_args: Mapping[str, str] = field(default_factory=dict)


CASES: dict[str, Case] = {
    "files_and_metadata": Case("""\
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
        """),
    "multi_stage_and_args": Case("""\
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
        """),
    # A directory copied onto an existing one keeps the existing one's metadata; new
    # directories (the destination and parents) are made by the copy.
    "copy_dir_onto_existing": Case(PRELUDE + """\
        RUN mkdir -p /srv/existing/sub /srv/empty && chmod 700 /srv/existing && \\
            chown 1000:1000 /srv/existing /srv/existing/sub && chmod 711 /srv/existing/sub && \\
            chmod 1777 /srv/empty && touch /srv/existing/old
        COPY tree/ /srv/existing/
        COPY tree /srv/empty
        COPY tree /srv/new
        COPY tree/ /srv/new2/
        COPY tree /srv/deep/er/new3/
        COPY tree/sub /srv/subonly/
        """),
    # Destinations through symlinks of the image: directory links are followed, also for
    # parents of the destination.
    "copy_through_symlink": Case(PRELUDE + """\
        RUN mkdir -p /real/dir && ln -s /real /abs && ln -s real /rel && \\
            ln -s dir /real/dirlink && echo old > /real/target && ln -s /real/target /filelink
        COPY a.txt /abs/
        COPY a.txt /rel/copied
        COPY tree/ /abs/dir/tree/
        COPY a.txt /real/dirlink
        COPY b.txt /rel/dirlink/
        COPY tree /rel/dirlink/t2/
        """),
    "copy_onto_file_symlink": Case(PRELUDE + """\
        RUN mkdir /real && echo old > /real/target && ln -s /real/target /filelink && \\
            ln -s target /real/rellink
        COPY b.txt /filelink
        COPY a.txt /real/rellink
        """),
    "context_symlinks_and_hardlinks": Case(PRELUDE + """\
        COPY links /links/
        COPY links/sym /followed
        COPY links/dirsym /dirfollowed/
        COPY links/hard1 links/hard2 /pair/
        COPY links/sub /sub-only
        """, setup=links_context),
    "chown_parents": Case(PRELUDE + """\
        RUN mkdir /exists
        COPY --chown=app:app a.txt /new/parent/a.txt
        COPY --chown=1001:1002 tree /byid/deep/
        COPY --chown=app tree/ /byname/x/
        COPY --chown=app a.txt /exists/sub/a
        COPY --chown=1234 a.txt /numeric/a
        COPY --chown=svc:grp1600 b.txt /svc2/b
        COPY --chown=app:1600 b.txt /mixed/
        """),
    "chown_user_without_group": Case(PRELUDE + """\
        COPY --chown=svc a.txt /svc/dir/
        """),
    "special_modes": Case(PRELUDE + """\
        COPY modes /modes/
        COPY modes/suid modes/f600 modes/f000 /single/
        COPY modes/dir700 /d700
        COPY modes/sticky /sticky/
        RUN stat -c '%n %a %u %g' /modes/* /single/* > /listing
        """, setup=modes_context),
    "destinations": Case(PRELUDE + """\
        RUN mkdir -p /existing /work && chmod 750 /existing
        COPY a.txt /newdir/
        COPY a.txt /newfile
        COPY a.txt /existing
        COPY tree /existing
        COPY a.txt b.txt /multi/
        COPY a.txt /newfile2/.
        WORKDIR /work
        COPY a.txt .
        COPY b.txt ./relname
        COPY a.txt sub/
        COPY tree/* /glob/
        COPY *.txt /globfiles/
        COPY files/ ..
        """),
    "dockerignore_excludes_itself": Case("""\
        FROM scratch
        COPY . /ctx/
        WORKDIR /app
        COPY ign .
        COPY ign/sub/ /sub/
        """, setup=lambda ctx: ignore_context(ctx, """\
            # a comment, then patterns
            **/*.log
            !important.log
            /secret
            build
            !build/keep.txt
            **/tmp
            docs/**/*.md
            !docs/readme.md
            busybox
            etc
            Dockerfile
            .dockerignore
            """)),
    "dockerignore_keeps_itself": Case("""\
        FROM scratch
        COPY . /ctx/
        """, setup=lambda ctx: ignore_context(ctx, """\
            *.log
            ign/*.log
            !ign/important.log
            /ign/secret
            ign/deep
            busybox
            """)),
    "dockerignore_star_with_exceptions": Case("""\
        FROM scratch
        COPY . /ctx/
        """, setup=lambda ctx: ignore_context(ctx, """\
            *
            !a.txt
            !ign/sub
            ign/sub/b.log
            !tree/sub/
            """)),
    "workdir_and_user": Case(PRELUDE + """\
        WORKDIR /a/b/c
        USER app
        WORKDIR /home/app/data
        WORKDIR rel/dir
        RUN id -u
        USER 1000:1000
        WORKDIR /a/b/c
        COPY a.txt .
        WORKDIR /a/b/c/d
        """),
    "user_by_name_then_copy_and_run": Case(PRELUDE + """\
        RUN mkdir -m 1777 /tmp && mkdir -p /home/app && chown app:app /home/app
        USER app
        COPY a.txt /home/app/a.txt
        COPY tree /home/app/tree/
        RUN echo hi > /tmp/by-app && mkdir /tmp/appdir && touch /home/app/made
        USER svc
        RUN touch /tmp/by-svc
        USER 1500
        RUN touch /tmp/by-1500
        USER svc:grp1600
        RUN touch /tmp/by-svc-grp
        USER 4321
        RUN touch /tmp/by-unknown
        USER root
        RUN id
        """),
    "run_deletions": Case(PRELUDE + """\
        RUN mkdir -p /d/sub /e /g/h && echo 1 > /d/f && echo 2 > /d/sub/g && echo 3 > /top && \\
            echo 4 > /e/keep && echo 5 > /e/gone && echo x > /g/h/i && echo y > /g/j
        RUN rm /top /e/gone && rm -rf /d/sub
        RUN rm -rf /d && mkdir /d && echo new > /d/new
        RUN rm -rf /e && echo file > /e
        RUN rm -rf /g && mkdir -p /g/h && chmod 700 /g
        RUN echo back > /top && rm /e && mkdir /e
        """),
    "rename_directories": Case(PRELUDE + """\
        RUN mkdir -p /src/deep/er && echo a > /src/deep/er/file && echo b > /src/top && \\
            ln -s top /src/link && chmod 700 /src/deep && chown -R 1000:1000 /src/deep
        RUN mv /src /dst
        RUN mv /dst/deep /moved && mkdir /src && mv /dst/top /src/top2
        RUN mkdir /x && echo 1 > /x/one && mv /moved /x/moved
        """),
    "hardlinks_across_layers": Case(PRELUDE + """\
        RUN echo data > /h1 && ln /h1 /h2 && mkdir /hd && ln /h1 /hd/h3
        RUN ln /h1 /h4
        RUN echo changed >> /h2
        RUN rm /h1 && ln /hd/h3 /h5
        """),
    "add_archives": Case(PRELUDE + """\
        ADD t.tar /unpacked/
        ADD t.tar /unpacked-noslash
        ADD t.tar.gz /gz/
        ADD fake.tar /fake/
        ADD a.txt /added.txt
        ADD a.txt b.txt /addmulti/
        RUN mkdir /existing-dir && chmod 700 /existing-dir
        ADD t.tar /existing-dir
        ADD t.tar /
        """, setup=archives_context),
    "expansion": Case(PRELUDE + """\
        ARG SRC=a.txt
        ARG EMPTY=
        ARG PORT
        ENV DEST=/exp HOME=/home/app
        ENV A=1 B=${A:-x} C=${UNSET:-def} D=${A:+alt} E=\\$A F='$A' G="$A q" H=${EMPTY:-fb}
        ENV A=2 J=$A K=${A}
        COPY ${SRC} $DEST/
        COPY ["${SRC}", "${DEST}/json/"]
        COPY $SRC ${DEST}/noslash
        WORKDIR ${HOME}/w
        WORKDIR $UNSET/x
        USER ${UNSET:-app}:${EMPTY:-app}
        LABEL l1=$A l2="${C} x" "l3"='$A' l4=${PORT:-none} l5=\\$A l6="a\\"b"
        EXPOSE ${PORT:-8080} ${EMPTY:-53}/udp
        ARG PORT=9000
        EXPOSE $PORT
        STOPSIGNAL ${SIG:-SIGTERM}
        ENV PATH=$PATH:/extra
        """),
    "entrypoint_resets_inherited_cmd": Case("""\
        FROM scratch AS base
        COPY busybox /bin/busybox
        CMD ["base-cmd"]
        ENTRYPOINT ["base-ep"]

        FROM base AS child
        ENTRYPOINT ["/bin/busybox", "echo"]

        FROM base AS cmd-only
        CMD ["only-cmd"]

        FROM cmd-only AS both
        CMD ["x"]
        ENTRYPOINT ["y"]

        FROM child
        LABEL last=1
        """),
    "target_child": Case("""\
        FROM scratch AS base
        COPY busybox /bin/busybox
        CMD ["base-cmd"]
        ENTRYPOINT ["base-ep"]

        FROM base AS child
        ENTRYPOINT ["/bin/busybox", "echo"]

        FROM base AS cmd-only
        CMD ["only-cmd"]

        FROM cmd-only AS both
        CMD ["x"]
        ENTRYPOINT ["y"]
        """, target="child"),
    "target_middle_stage": Case("""\
        FROM scratch AS base
        COPY busybox /bin/busybox
        CMD ["base-cmd"]
        ENTRYPOINT ["base-ep"]

        FROM base AS cmd-only
        CMD ["only-cmd"]

        FROM cmd-only AS both
        CMD ["x"]
        ENTRYPOINT ["y"]

        FROM base
        RUN ["/bin/busybox", "true"]
        """, target="both"),
    "metadata_merging": Case("""\
        FROM scratch AS base
        COPY busybox /bin/busybox
        EXPOSE 80 443/tcp
        VOLUME ["/data", "/logs"]
        LABEL a=1 b=2
        ENV X=1 Y=2
        HEALTHCHECK CMD ["/bin/busybox", "true"]
        STOPSIGNAL 9

        FROM base
        EXPOSE 80/tcp 53/udp
        VOLUME /data /cache
        LABEL b=3 c=4
        ENV Y=3 Z=4
        HEALTHCHECK NONE
        MAINTAINER someone
        """),
    "volume_then_run": Case(PRELUDE + """\
        RUN mkdir /vol && echo before > /vol/before
        VOLUME /vol /fresh
        RUN echo after > /vol/after && echo x > /vol/before && mkdir -p /fresh/x
        COPY a.txt /vol/copied
        RUN ls /vol
        """),
    "onbuild_triggers": Case("""\
        FROM {parent}
        RUN cat /onbuild/ran
        ONBUILD RUN echo grandchild
        COPY --from={parent} /onbuild /from-parent/
        COPY --from={parent} /bin/busybox /bb
        """, setup=onbuild_context, parent=True),
    "copy_from_stages": Case(PRELUDE + """\
        RUN mkdir -p /out/sub /out/empty && echo f > /out/f && chmod 4755 /out/f && \\
            chown -R 1000:1000 /out/sub && echo s > /out/sub/s && ln -s f /out/link && \\
            ln /out/f /out/hard && chmod 700 /out/sub && ln -s /out /outlink
        FROM scratch AS second
        COPY --from=0 /bin/busybox /bin/
        COPY --from=0 /etc /etc/
        COPY --from=0 /out /copied/
        COPY --from=0 /out /copied
        COPY --from=0 /out/f /out/sub/ /multi/
        COPY --from=0 --chown=app:1600 /out /chowned/deep/
        COPY --from=0 --chown=1000 /out/f /chowned/f
        COPY --from=0 /outlink/f /via-link
        COPY --from=0 /outlink /linked-dir
        """),
    "build_args": Case("""\
        ARG GLOBAL=g-default
        ARG OVERRIDE=o-default
        FROM scratch
        COPY busybox /bin/busybox
        ARG GLOBAL
        ARG OVERRIDE
        ARG LOCAL=l-default
        ARG SHADOW=arg
        ARG UNSET_ARG
        ENV SHADOW=env PATH=/bin
        RUN ["/bin/busybox", "--install", "-s", "/bin"]
        RUN ["/bin/busybox", "sh", "-c", "echo $GLOBAL $OVERRIDE $LOCAL $SHADOW > /args"]
        RUN echo "$GLOBAL-$UNSET_ARG" > /args2
        LABEL g=$GLOBAL o=$OVERRIDE l=$LOCAL s=$SHADOW
        """, build_args={"OVERRIDE": "from-cli", "LOCAL": "local-cli"}),
    "metadata_only_changes": Case(PRELUDE + """\
        RUN mkdir -p /d/e && echo 1 > /d/f && echo 2 > /d/e/g && ln -s f /d/l && \\
            mkfifo /d/fifo && chmod 640 /d/f
        RUN chmod 700 /d && chown 1000:1000 /d/f && chown -h 1000:1000 /d/l && chmod 4711 /d/e/g
        RUN echo more >> /d/e/g && touch /d/f
        RUN mv /d/f /d/f2 && ln -sf f2 /d/l && rm /d/fifo && mkfifo -m 600 /d/fifo
        """),
    "context_corners": Case(PRELUDE + """\
        COPY empty/ /empty-contents/
        COPY empty /empty-dir
        COPY emptyfile /
        COPY tree/sub/../f /dotdot
        COPY ["with space.txt", "/spaced dir/"]
        COPY tr?e/s* /wild/
        COPY [ab].txt /classes/
        """, setup=lambda ctx: (
            (ctx / "empty").mkdir(), (ctx / "emptyfile").write_bytes(b""),
            (ctx / "with space.txt").write_text("space\n"))),
    "dockerignore_more_patterns": Case("""\
        FROM scratch
        COPY . /ctx/
        """, setup=lambda ctx: ignore_context(ctx, """\
            */*.log
            ign/deep/*
            !ign/deep/er
            ign/docs/**
            !ign/docs/**/d.md
            ./busybox
            tree/sub/
            etc/../etc/passwd
            ign/?pp.py
            ign/[st]*/c.txt
            """)),
    "config_corners": Case("""\
        FROM scratch AS base
        COPY busybox /bin/busybox
        ENV OLD_FORM value with  spaces
        ENV MULTI=a \\
            NEXT=b
        LABEL "multi.line"="x \\
            y" empty=""
        HEALTHCHECK --interval=1m30s --timeout=1500ms --start-period=2s --retries=10 \\
            CMD ["/bin/busybox", "true"]
        STOPSIGNAL 9
        EXPOSE 8080/tcp 8080/udp 100-102/udp
        SHELL ["/bin/busybox", "sh", "-c"]
        RUN echo shell-form > /shell
        USER 123:456
        CMD []
        ENTRYPOINT []

        FROM base
        ENTRYPOINT ["/bin/busybox"]
        ONBUILD ADD . /app
        ONBUILD   RUN   echo spaced
        """),
    "workdir_through_symlink": Case(PRELUDE + """\
        RUN mkdir -p /real/exists && ln -s /real /link && ln -s missing /real/dangling
        WORKDIR /link/exists
        WORKDIR /link/new/deeper
        WORKDIR /real/dangling/x
        COPY a.txt .
        """),
    # The same layer twice in one image (overlayfs refuses a lowerdir given twice).
    "repeated_layer": Case(PRELUDE + """\
        COPY a.txt /x
        RUN rm /x
        COPY a.txt /x
        RUN cat /x && echo after > /after
        """),
    "copy_over_image_entries": Case(PRELUDE + """\
        RUN mkdir -p /t /elsewhere && ln -s /elsewhere /t/sub && echo old > /h1 && \\
            ln /h1 /h2 && mkdir -p /d/a.txt && echo keep > /d/keep && ln -s gone /t/f
        COPY tree /t/
        COPY a.txt /h1
        ADD --chown=app b.txt /added/
        ADD --chown=1000:1000 a.txt /added/renamed
        """),
    "context_names": Case(PRELUDE + """\
        COPY names /names/
        """, setup=lambda ctx: [
            (ctx / "names" / rel).parent.mkdir(parents=True, exist_ok=True) or
            (ctx / "names" / rel).write_text(rel)
            for rel in ("ünïcødé €.txt", "x" * 120, "deep/" * 20 + "leaf", ".hidden",
                        "sp ace/and\ttab", "-dash", "star*", "q?uestion")]),
    "special_files_by_run": Case(PRELUDE + """\
        RUN mknod /null-copy c 1 3 && mknod /blk b 7 0 && mkfifo /fifo && chmod 620 /null-copy
        """),
    "workdir_removed_later": Case(PRELUDE + """\
        WORKDIR /w/x
        RUN rm -rf /w
        RUN echo hi > /hi
        COPY a.txt b.txt ./
        """),
    "replace_types": Case(PRELUDE + """\
        RUN mkdir -p /d1/sub /d2 /d3 && echo 1 > /d1/sub/f && ln -s /d1 /s1 && echo f > /f1 && \\
            ln -s f1 /s2 && echo 2 > /d3/x
        RUN rm -rf /d1 && ln -s /d2 /d1 && rm /s1 && mkdir /s1 && echo in > /s1/in && \\
            rm /f1 && mkdir /f1 && rm /s2 && echo now-file > /s2 && rm -rf /d3 && ln /s2 /d3
        """),
    "empty_run_results": Case(PRELUDE + """\
        RUN true
        RUN echo x > /tmpfile && rm /tmpfile
        RUN mkdir /d && rmdir /d
        RUN cat /etc/hosts /etc/resolv.conf > /dev/null && hostname
        RUN echo 1.2.3.4 extra >> /etc/hosts
        RUN mkdir -p /etc/x && echo y > /etc/x/y
        """),
}

# Where pydock follows BuildKit rather than the classic builder: case -> {difference: why}.
# A key is "config:<Field>", "fs:<path>" (an entry of the merged root filesystem), "layers"
# (their number or content) or "history".
EXPECTED_DIFFERENCES: dict[str, dict[str, str]] = {
    # The docker CLI's context walk skips an excluded directory unless an exception pattern
    # starts with its path; BuildKit (and pydock) look inside when an exception has
    # wildcards, so "!ign/docs/**/d.md" re-includes the file as the pattern says.
    "dockerignore_more_patterns": {
        "fs:/ctx/ign/docs/drafts": "BuildKit's walk", "fs:/ctx/ign/docs/drafts/d.md": "ditto",
        "layers": "the same two entries"},
    # WORKDIR makes its missing directories owned by USER, as BuildKit does; the classic
    # builder leaves them root's (then `USER app`, `WORKDIR /x`, `RUN touch f` fails).
    "workdir_and_user": {
        **{f"fs:{path}": "owned by USER (BuildKit)" for path in (
            "/home", "/home/app", "/home/app/data", "/home/app/data/rel",
            "/home/app/data/rel/dir", "/a/b/c/d")},
        "layers": "the same directories in the WORKDIR layers"},
}


def _context(tmp_path: Path, case: Case) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    base_context(ctx)
    if case.setup is not None:
        case.setup(ctx)
    return ctx


def _differences(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (ours.get(k), theirs.get(k)) for k in sorted({*ours, *theirs})
            if ours.get(k) != theirs.get(k)}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.usefixtures("docker_leaves_no_images")
def test_same_image_as_docker_build(docker_client: Any, tmp_path: Path, store_dir: Path,
                                    case: str) -> None:
    needs_root()
    spec = CASES[case]
    ctx = _context(tmp_path, spec)
    store = Store(store_dir)
    parent = f"pydock-test/parent-{uuid.uuid4().hex[:8]}"
    text = textwrap.dedent(spec.dockerfile).replace("{parent}", parent)
    (ctx / "Dockerfile").write_text(text)
    tag = f"pydock-test/build-{uuid.uuid4().hex[:8]}"
    try:
        if spec.parent:
            parent_ctx = tmp_path / "parent-ctx"
            shutil.copytree(ctx, parent_ctx, symlinks=True)
            shutil.copy(ctx / "Dockerfile.parent", parent_ctx / "Dockerfile")
            docker_build(docker_client, parent_ctx, parent)
            pydock_image(store, parent_ctx, tags=(parent,))
        docker_config, docker_layers = docker_image(docker_client, ctx, tag, target=spec.target,
                                                    build_args=spec.build_args)
    finally:
        if spec.parent:
            remove_docker_image(docker_client, parent)
    ours_config, ours_layers = pydock_image(store, ctx, target=spec.target,
                                            build_args=spec.build_args)

    expected = EXPECTED_DIFFERENCES.get(case, {})
    found: dict[str, Any] = {}
    for key in CONFIG_FIELDS:
        theirs = docker_config["config"].get(key) or None
        ours = ours_config["config"].get(key) or None
        if ours != theirs:
            found[f"config:{key}"] = (ours, theirs)
    theirs_fs = merged_view(docker_layers)
    ours_fs = merged_view(ours_layers)
    for path, pair in _differences(ours_fs, theirs_fs).items():
        found[f"fs:/{path}"] = pair
    ours_by_layer = [layer_view(data) for data in ours_layers]
    theirs_by_layer = [layer_view(data) for data in docker_layers]
    if ours_by_layer != theirs_by_layer and "layers" not in found:
        if len(ours_by_layer) != len(theirs_by_layer):
            found["layers"] = (len(ours_by_layer), len(theirs_by_layer))
        else:
            found["layers"] = [(i, _differences(o, t)) for i, (o, t)
                               in enumerate(zip(ours_by_layer, theirs_by_layer, strict=True))
                               if o != t]
    ours_history = _normalized_history(ours_config)
    theirs_history = _normalized_history(docker_config)
    if ours_history != theirs_history:
        found["history"] = [(o, t) for o, t in zip(ours_history, theirs_history, strict=False)
                            if o != t] or (len(ours_history), len(theirs_history))
    unexpected = {k: v for k, v in found.items() if k not in expected}
    assert not unexpected, "pydock differs from docker build (pydock, docker):\n" + \
        "\n".join(f"  {k}: {v}" for k, v in unexpected.items())
    missing = sorted(set(expected) - set(found))
    assert not missing, f"expected differences did not show: {missing}"
