"""The image builder against the real kernel: instructions, Docker's COPY rules, the layer cache,
multi-stage builds, errors that name the Dockerfile line, concurrent builds."""

from __future__ import annotations

import http.server
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import leftovers
from pydock import BuildError, DockerfileError, Store
from pydock.builder import BuildOptions, BuildReporter, BuildResult, build
from registry_server import registry_fixture  # noqa: F401  (the `registry` fixture)


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    path = tmp_path / "ctx"
    path.mkdir()
    return path


def write(ctx: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = ctx / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content) if name.endswith("Dockerfile") else content)


class Recorder(BuildReporter):
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.out = b""

    def step(self, number: int, total: int, text: str) -> None:
        self.lines.append(f"Step {number}/{total} : {text}")

    def note(self, text: str) -> None:
        self.lines.append(text)

    def output(self, data: bytes) -> None:
        self.out += data


def do_build(backend, ctx: Path, dockerfile: str | None = None, *,  # type: ignore[no-untyped-def]
             reporter: BuildReporter | None = None, **kw) -> BuildResult:
    if dockerfile is not None:
        write(ctx, {"Dockerfile": dockerfile})
    return build(backend.store, BuildOptions(context=str(ctx), **kw), backend=backend,
                 reporter=reporter)


def run(backend, image: str, *argv: str) -> str:  # type: ignore[no-untyped-def]
    c = backend.run(image, command=list(argv))
    try:
        status = c.wait(timeout=30)
        out, err = c.logs()
        assert status.exit_code == 0, (argv, out, err)
        return out.decode()
    finally:
        c.remove(force=True)


def config(backend, ref: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return backend.store.config_document(backend.store.image(ref))


# -- instructions and config -------------------------------------------------------------------


def test_config_fields_follow_docker(backend, ctx: Path) -> None:
    result = do_build(backend, ctx, """\
        FROM busybox
        ENV A=1 B="two words"
        ENV C=${A}-x
        LABEL org.example.name="demo app" version=1
        EXPOSE 8000 9000-9001/udp
        VOLUME /data
        VOLUME ["/cache"]
        USER app
        WORKDIR /srv
        WORKDIR sub
        STOPSIGNAL SIGINT
        HEALTHCHECK --interval=5s --retries=2 CMD wget -q -O- localhost:8000 || exit 1
        ONBUILD RUN echo child
        SHELL ["/bin/sh", "-ec"]
        ENTRYPOINT ["/bin/sh", "-c"]
        CMD echo $C
        """, tags=("cfg:1",))
    cfg = config(backend, "cfg:1")["config"]
    assert "A=1" in cfg["Env"] and "B=two words" in cfg["Env"] and "C=1-x" in cfg["Env"]
    assert cfg["Labels"] == {"org.example.name": "demo app", "version": "1"}
    assert set(cfg["ExposedPorts"]) == {"8000/tcp", "9000/udp", "9001/udp"}
    assert set(cfg["Volumes"]) == {"/data", "/cache"}
    assert cfg["User"] == "app"
    assert cfg["WorkingDir"] == "/srv/sub"
    assert cfg["StopSignal"] == "SIGINT"
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "wget -q -O- localhost:8000 || exit 1"],
                                  "Interval": 5_000_000_000, "Retries": 2}
    assert cfg["OnBuild"] == ["RUN echo child"]
    assert cfg["Shell"] == ["/bin/sh", "-ec"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"]
    assert cfg["Cmd"] == ["/bin/sh", "-ec", "echo $C"]
    assert result.image.tags == ("cfg:1",)


def test_entrypoint_resets_an_inherited_cmd_but_not_one_set_in_the_stage(backend, ctx) -> None:
    do_build(backend, ctx, 'FROM busybox\nCMD ["base"]\n', tags=("base:1",))
    do_build(backend, ctx, 'FROM base:1\nENTRYPOINT ["ep"]\n', tags=("child:1",))
    assert "Cmd" not in config(backend, "child:1")["config"]
    do_build(backend, ctx, 'FROM base:1\nCMD ["mine"]\nENTRYPOINT ["ep"]\n', tags=("child:2",))
    assert config(backend, "child:2")["config"]["Cmd"] == ["mine"]


def test_run_sees_env_args_user_and_workdir(backend, ctx: Path) -> None:
    do_build(backend, ctx, """\
        FROM busybox
        ARG FLAVOUR=plain
        ENV GREETING=hello
        WORKDIR /work/dir
        USER app
        RUN echo "$GREETING $FLAVOUR $(id -u) $(pwd)" > /tmp/out && id -un >> /tmp/out
        """, tags=("run:1",), build_args={"FLAVOUR": "spicy"})
    assert run(backend, "run:1", "cat", "/tmp/out") == "hello spicy 1000 /work/dir\napp\n"
    # ARG values are not persisted in the image's environment
    assert not any(e.startswith("FLAVOUR=") for e in config(backend, "run:1")["config"]["Env"])


def test_run_heredoc_and_exec_form(backend, ctx: Path) -> None:
    do_build(backend, ctx, """\
        FROM busybox
        RUN <<EOF
        echo one > /a
        echo two >> /a
        EOF
        RUN ["sh", "-c", "echo three >> /a"]
        ENV WHO=world
        COPY <<EOF /b.txt
        inline $WHO
        EOF
        """, tags=("heredoc:1",))
    assert run(backend, "heredoc:1", "cat", "/a", "/b.txt") == "one\ntwo\nthree\ninline world\n"


def test_injected_files_stay_out_of_layers(backend, ctx: Path) -> None:
    result = do_build(backend, ctx, "FROM busybox\nRUN cat /etc/hosts /etc/resolv.conf >/dev/null; "
                      "hostname > /hn\n", tags=("inj:1",))
    layer = backend.store.layer_path(result.image.diff_ids[-1])
    names = sorted(str(p.relative_to(layer)) for p in layer.rglob("*"))
    assert names == ["hn"]
    assert run(backend, "inj:1", "cat", "/hn") == "buildkitsandbox\n"


def test_deletions_and_recreated_directories_across_layers(backend, ctx: Path) -> None:
    do_build(backend, ctx, """\
        FROM busybox
        RUN mkdir -p /d/sub && echo x > /d/sub/f && echo keep > /d/k && echo gone > /gone
        RUN rm /gone && rm -r /d && mkdir /d && echo new > /d/n
        RUN chmod 4755 /d/n && mkdir -m 1777 /sticky && ln -s /d/n /link && ln /d/n /hard
        """, tags=("del:1",))
    out = run(backend, "del:1", "sh", "-c",
              "ls -A /d; test -e /gone || echo no-gone; stat -c '%a %h' /d/n /sticky; "
              "readlink /link")
    assert out == "n\nno-gone\n4755 2\n1777 2\n/d/n\n"


def test_onbuild_triggers_run_in_the_child_build(backend, ctx: Path) -> None:
    do_build(backend, ctx, 'FROM busybox\nONBUILD RUN echo triggered > /t\nONBUILD ENV X=1\n',
             tags=("parent:1",))
    do_build(backend, ctx, "FROM parent:1\nRUN cat /t\n", tags=("child:3",))
    assert run(backend, "child:3", "cat", "/t") == "triggered\n"
    cfg = config(backend, "child:3")["config"]
    assert "X=1" in cfg["Env"] and not cfg.get("OnBuild")


# -- COPY and ADD -----------------------------------------------------------------------------


def test_copy_follows_dockers_destination_rules(backend, ctx: Path) -> None:
    write(ctx, {"a.txt": "a", "b.txt": "b", "dir/x": "x", "dir/sub/y": "y", "one.py": "1",
                "two.py": "2"})
    os.chmod(ctx / "dir/x", 0o750)
    os.symlink("x", ctx / "dir/lnk")
    do_build(backend, ctx, """\
        FROM busybox
        COPY a.txt /file-renamed
        COPY a.txt /newdir/
        COPY a.txt b.txt /multi/
        COPY dir /contents/
        COPY dir/ /contents2
        COPY *.py /py/
        COPY a.txt /tmp
        WORKDIR /rel
        COPY a.txt .
        """, tags=("copy:1",))
    out = run(backend, "copy:1", "sh", "-c",
              "cat /file-renamed /newdir/a.txt /multi/a.txt /multi/b.txt; echo; "
              "ls /contents; ls /contents2; ls /py; cat /contents/sub/y /tmp/a.txt /rel/a.txt; echo; "
              "stat -c '%a' /contents/x /tmp; readlink /contents/lnk")
    assert out == ("aaab\n"
                   "lnk\nsub\nx\nlnk\nsub\nx\none.py\ntwo.py\n"
                   "yaa\n750\n1777\nx\n")


def test_copy_chown_by_name_and_chmod(backend, ctx: Path) -> None:
    write(ctx, {"f": "f", "d/g": "g"})
    do_build(backend, ctx, """\
        FROM busybox
        COPY --chown=app:extra f /f1
        COPY --chown=1234 f /f2
        COPY --chmod=600 d /d/
        """, tags=("chown:1",))
    out = run(backend, "chown:1", "stat", "-c", "%u:%g %a %n", "/f1", "/f2", "/d/g")
    assert out == "1000:2000 644 /f1\n1234:1234 644 /f2\n0:0 600 /d/g\n"


def test_copy_many_sources_needs_a_directory_destination(backend, ctx: Path) -> None:
    write(ctx, {"a": "a", "b": "b"})
    with pytest.raises(BuildError) as info:
        do_build(backend, ctx, "FROM busybox\nCOPY a b /dest\n")
    assert info.value.line == 2 and "must be a directory and end with a /" in str(info.value)


def test_dockerignore_applies_before_copy_and_hashing(backend, ctx: Path) -> None:
    write(ctx, {"app/main.py": "main", "app/secret.env": "s", "app/keep.env": "k",
                ".dockerignore": "**/*.env\n!app/keep.env\n"})
    first = do_build(backend, ctx, "FROM busybox\nCOPY app /app/\n", tags=("ign:1",))
    assert run(backend, "ign:1", "ls", "/app") == "keep.env\nmain.py\n"
    (ctx / "app/secret.env").write_text("changed")  # excluded: must not bust the cache
    again = do_build(backend, ctx, tags=("ign:1",))
    assert again.cached == again.steps - 1 and again.image.id == first.image.id


def test_add_extracts_local_tars_and_downloads_urls(backend, ctx: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("pkg/data.txt")
        info.size, info.uid = 4, 42
        tar.addfile(info, io.BytesIO(b"data"))
    write(ctx, {"pkg.tar.gz": buf.getvalue(), "served/hello.txt": "from http"})
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(ctx / "served"), **k)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hello.txt"
        do_build(backend, ctx, f"FROM busybox\nADD pkg.tar.gz /opt/\nADD {url} /dl/\n",
                 tags=("add:1",))
    finally:
        server.shutdown()
    out = run(backend, "add:1", "sh", "-c",
              "cat /opt/pkg/data.txt; stat -c ' %u' /opt/pkg/data.txt; cat /dl/hello.txt; "
              "stat -c ' %a' /dl/hello.txt")
    assert out == "data 42\nfrom http 600\n"


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("dockerfile", "line", "words"), [
    ("FROM busybox\nFROBNICATE x\n", 2, "unknown instruction"),
    ("RUN echo hi\n", 1, "FROM"),
    ("FROM busybox\nENV\n", 2, "ENV"),
    ("FROM busybox\nARG\n", 2, "ARG"),
    ("FROM busybox\nCOPY nothere.txt /\n", 2, "nothere.txt"),
    ("FROM busybox\nCOPY ../outside /\n", 2, "outside the build context"),
    ("FROM busybox\nCOPY --from=nostage /x /\n", 2, "nostage"),
    ("FROM busybox\nRUN echo failing-output; exit 7\n", 2, "non-zero code: 7"),
    ("FROM no-such-image:1\n", 1, "no-such-image:1"),
])
def test_errors_name_the_dockerfile_line(backend, ctx: Path, dockerfile: str, line: int,
                                         words: str) -> None:
    before = {p.name for p in backend.store.images_dir.iterdir()}
    with pytest.raises((BuildError, DockerfileError)) as info:
        do_build(backend, ctx, dockerfile, tags=("never:1",))
    err = info.value
    assert err.line == line and err.path.endswith("Dockerfile")  # type: ignore[union-attr]
    assert words in str(err)
    assert {p.name for p in backend.store.images_dir.iterdir()} == before
    if "exit 7" in dockerfile:
        assert isinstance(err, BuildError) and err.step_exit_code == 7
        assert "failing-output" in err.output


# -- cache --------------------------------------------------------------------------------------


def test_cache_hits_every_step_then_rebuilds_from_a_changed_file(backend, ctx: Path) -> None:
    write(ctx, {"a.txt": "a", "b.txt": "b"})
    dockerfile = """\
        FROM busybox
        RUN echo one > /one
        COPY a.txt /
        RUN date +%s%N > /stamp
        COPY b.txt /
        CMD ["cat", "/b.txt"]
        """
    first = do_build(backend, ctx, dockerfile)
    assert first.cached == 0 and first.steps == 6
    again = do_build(backend, ctx)
    assert again.cached == 5 and again.image.id == first.image.id
    (ctx / "a.txt").write_text("A")
    changed = do_build(backend, ctx)
    assert changed.cached == 1  # RUN echo one; from COPY a.txt on everything runs again
    assert changed.image.diff_ids[:2] == first.image.diff_ids[:2]
    assert changed.image.diff_ids[2] != first.image.diff_ids[2]  # COPY a.txt: new content
    nocache = do_build(backend, ctx, no_cache=True)
    assert nocache.cached == 0 and nocache.image.id != changed.image.id


def test_build_args_key_the_run_cache(backend, ctx: Path) -> None:
    dockerfile = "FROM busybox\nARG V=1\nRUN echo $V > /v\n"
    do_build(backend, ctx, dockerfile, tags=("args:1",))
    second = do_build(backend, ctx, tags=("args:2",), build_args={"V": "2"})
    assert second.cached == 0 and second.executed == 2  # a new ARG value: ARG and RUN rerun
    assert run(backend, "args:2", "cat", "/v") == "2\n"
    unused = do_build(backend, ctx, build_args={"NOPE": "x"})
    assert any("NOPE" in w for w in unused.warnings)


# -- stages ------------------------------------------------------------------------------------


def test_multi_stage_builds_only_what_the_target_needs(backend, ctx: Path) -> None:
    rec = Recorder()
    result = do_build(backend, ctx, """\
        FROM busybox AS builder
        RUN mkdir -p /out && echo built > /out/artifact && chmod 700 /out/artifact

        FROM busybox AS broken
        RUN exit 1

        FROM busybox AS final
        COPY --from=builder /out /app/
        COPY --from=0 /out/artifact /single
        CMD ["cat", "/app/artifact"]

        FROM final AS test
        RUN exit 1
        """, target="final", tags=("ms:1",), reporter=rec)
    assert result.steps == 2 + 4
    assert not any("exit 1" in line for line in rec.lines)
    assert run(backend, "ms:1", "sh", "-c", "cat /app/artifact /single; stat -c %a /app/artifact"
               ) == "built\nbuilt\n700\n"
    with pytest.raises(BuildError, match="target stage 'nope' could not be found"):
        do_build(backend, ctx, target="nope")


def test_global_args_expand_in_from(backend, ctx: Path) -> None:
    do_build(backend, ctx, "FROM busybox\nRUN echo v2 > /v\n", tags=("base:v2",))
    do_build(backend, ctx, "ARG TAG=v1\nFROM base:${TAG}\nARG TAG\nRUN cat /v; echo $TAG > /t\n",
             tags=("garg:1",), build_args={"TAG": "v2"})
    assert run(backend, "garg:1", "cat", "/v", "/t") == "v2\nv2\n"


# -- concurrency and interruption --------------------------------------------------------------


_BUILD_SCRIPT = """\
import json, sys
from pydock import Store
from pydock.builder import BuildOptions, build
r = build(Store(sys.argv[1]), BuildOptions(context=sys.argv[2]))
print(json.dumps({"id": r.image.id, "cached": r.cached, "executed": r.executed}))
"""


def test_concurrent_builds_build_each_step_once(backend, ctx: Path, store_dir: Path) -> None:
    write(ctx, {"f": "f", "Dockerfile": "FROM busybox\nRUN sleep 0.5; echo 1 > /one\n"
                "COPY f /\nRUN sleep 0.5; echo 2 > /two\n"})
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD_SCRIPT, str(store_dir), str(ctx)],
                              stdout=subprocess.PIPE) for _ in range(2)]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert results[0]["id"] == results[1]["id"]
    built = sum(r["executed"] for r in results)
    assert built == 3  # each of the 3 steps after FROM ran exactly once across both


def test_a_killed_build_leaves_no_image_layer_or_process(backend, ctx: Path,
                                                         store_dir: Path) -> None:
    write(ctx, {"Dockerfile": "FROM busybox\nRUN echo started; sleep 60\n"})
    proc = subprocess.Popen([sys.executable, "-c", _BUILD_SCRIPT, str(store_dir), str(ctx)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = Store(store_dir)
    images_before = {p.name for p in store.images_dir.iterdir()}
    layers_before = {p.name for p in store.layers_dir.iterdir()}
    deadline = time.monotonic() + 30
    while not any(store.containers_dir.glob("*/config.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    backend.sweep()
    assert {p.name for p in store.images_dir.iterdir()} == images_before
    store.gc()
    assert {p.name for p in store.layers_dir.iterdir()} == layers_before
    assert not list(store.build_cache_dir.glob("*.json"))
    deadline = time.monotonic() + 10
    while leftovers(store_dir).get("processes") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not leftovers(store_dir).get("processes")


def test_run_mounts_cache_bind_and_tmpfs_stay_out_of_the_layer(backend, ctx: Path) -> None:
    write(ctx, {"src/input.txt": "from the context\n"})
    dockerfile = """\
        FROM busybox
        RUN --mount=type=cache,target=/var/cache/app \\
            --mount=type=bind,source=src,target=/mnt/src \\
            --mount=type=tmpfs,target=/scratch \\
            cat /mnt/src/input.txt > /result && echo run >> /var/cache/app/log && \\
            cat /var/cache/app/log | wc -l > /runs && touch /scratch/x
        """
    first = do_build(backend, ctx, dockerfile, tags=("mnt:1",))
    layer = backend.store.layer_path(first.image.diff_ids[-1])
    assert sorted(str(p.relative_to(layer)) for p in layer.rglob("*")) == ["result", "runs"]
    assert run(backend, "mnt:1", "cat", "/result", "/runs") == "from the context\n1\n"
    do_build(backend, ctx, tags=("mnt:2",), no_cache=True)  # the cache mount persists
    assert run(backend, "mnt:2", "cat", "/runs") == "2\n"
    (ctx / "src/input.txt").write_text("changed\n")  # a bind source keys the cache
    assert do_build(backend, ctx, tags=("mnt:3",)).cached == 0
    with pytest.raises(BuildError, match="read-write bind mounts are not supported"):
        do_build(backend, ctx, "FROM busybox\nRUN --mount=type=bind,target=/x,rw true\n")


def test_from_a_registry_reference_pulls_the_base(backend, ctx: Path, registry) -> None:
    from pydock import push
    from pydock.sources import resolve_base

    ref = f"{registry.host}/build-base/busybox:1"
    push(backend.store, "busybox", ref)
    backend.store.remove_image("busybox")  # only the registry has it now
    write(ctx, {"Dockerfile": f"FROM {ref}\nRUN echo pulled > /p\n"})
    result = build(backend.store, BuildOptions(context=str(ctx), tags=("pulled:1",)),
                   backend=backend, resolve_base=resolve_base)
    assert result.executed == 1
    assert run(backend, "pulled:1", "cat", "/p") == "pulled\n"
    assert backend.store.image(ref).id  # pulled and tagged under its name


def test_from_platform_must_be_the_hosts(backend, ctx: Path) -> None:
    ok = do_build(backend, ctx, "FROM --platform=$BUILDPLATFORM busybox\nRUN true\n")
    assert ok.executed == 1
    with pytest.raises(BuildError, match="only the host platform"):
        do_build(backend, ctx, "FROM --platform=linux/s390x busybox\n")


# -- Docker's layer rules (compared with docker build in test_build_docker.py) ----------------


def test_steps_that_change_nothing_add_no_layer(backend, ctx: Path) -> None:
    result = do_build(backend, ctx, """\
        FROM busybox
        RUN true
        WORKDIR /tmp
        RUN echo x > /f && rm /f
        RUN echo kept > /kept
        """, tags=("empty:1",))
    base = backend.store.image("busybox")
    assert len(result.image.diff_ids) == len(base.diff_ids) + 1
    history = config(backend, "empty:1")["history"][-4:]
    assert [h.get("empty_layer", False) for h in history] == [True, True, True, False]
    assert [h["created_by"] for h in history] == [
        "/bin/sh -c true", "/bin/sh -c #(nop) WORKDIR /tmp", "/bin/sh -c echo x > /f && rm /f",
        "/bin/sh -c echo kept > /kept"]


def test_workdir_under_user_is_the_users_so_run_can_write_there(backend, ctx: Path) -> None:
    do_build(backend, ctx, """\
        FROM busybox
        USER app
        WORKDIR /srv/app/data
        RUN touch made-by-app
        USER root
        WORKDIR /srv/root-owned
        """, tags=("wd:1",))
    out = run(backend, "wd:1", "stat", "-c", "%n %u:%g %a", "/srv", "/srv/app/data",
              "/srv/app/data/made-by-app", "/srv/root-owned")
    assert out.splitlines() == ["/srv 1000:1000 755", "/srv/app/data 1000:1000 755",
                                "/srv/app/data/made-by-app 1000:1000 644",
                                "/srv/root-owned 0:0 755"]


def test_run_changes_to_volumes_are_dropped(backend, ctx: Path) -> None:
    do_build(backend, ctx, """\
        FROM busybox
        RUN mkdir /vol && echo before > /vol/f
        VOLUME /vol /fresh/point
        RUN echo after > /vol/f && echo new > /vol/new && mkdir -p /fresh/point/x && \\
            cat /vol/f > /seen
        """, tags=("vol:1",))
    out = run(backend, "vol:1", "sh", "-c", "cat /vol/f /seen; ls -A /vol /fresh/point")
    assert out == "before\nafter\n/fresh/point:\n\n/vol:\nf\n"


def test_a_layer_repeated_in_one_image_still_mounts(backend, ctx: Path) -> None:
    write(ctx, {"a.txt": "a\n"})
    result = do_build(backend, ctx, """\
        FROM busybox
        COPY a.txt /x
        RUN rm /x
        COPY a.txt /x
        RUN cat /x > /y
        """, tags=("rep:1",))
    diff_ids = result.image.diff_ids
    assert diff_ids[-4] == diff_ids[-2]
    assert run(backend, "rep:1", "cat", "/x", "/y") == "a\na\n"


def test_copy_keeps_docker_modes_and_owners(backend, ctx: Path) -> None:
    write(ctx, {"tool": "#!/bin/sh\n", "d/f": "f\n"})
    (ctx / "tool").chmod(0o4755)
    (ctx / "d").chmod(0o700)
    do_build(backend, ctx, """\
        FROM busybox
        RUN ln -s /real /link && mkdir /real && echo old > /real/t && ln -s /real/t /tlink
        COPY tool /link/
        COPY d /new/dir
        COPY --chown=app d /owned/deep/
        COPY tool /tlink
        """, tags=("modes:1",))
    out = run(backend, "modes:1", "sh", "-c",
              "stat -c '%n %a %u:%g' /real/tool /new/dir /owned /owned/deep /owned/deep/f; "
              "readlink /tlink; cat /real/t")
    # set-user-ID dropped by the copy's chown; new directories 0755; the parents of a
    # directory's destination root's, the destination the owner's; a symlinked file written
    assert out.splitlines() == ["/real/tool 755 0:0", "/new/dir 755 0:0", "/owned 755 0:0",
                                "/owned/deep 755 1000:1000", "/owned/deep/f 644 1000:1000",
                                "/real/t", "#!/bin/sh"]
