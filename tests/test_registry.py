"""Pull and push against a real registry server (Debian's docker-registry on 127.0.0.1):
multi-layer images, indexes, digests, auth (token and basic), parallel pulls, the CLI, and
Docker itself on the other end when a daemon answers."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import needs_root, pydock_cli, require_service
from pydock import ImageConfig, RegistryError, Store, UsageError, pull, push, push_index
from pydock.models import Image, ImageRef
from pydock.sources.auth import Challenge, load_credentials
from pydock.sources.client import Repository
from pydock.sources.manifest import OCI_CONFIG, OCI_MANIFEST, Descriptor, Index, Platform
from pydock.sources.reference import RegistryRef, is_loopback
from registry_server import (  # registry_fixture: the session's `registry`
    RegistryServer,
    TokenServer,
    docker_config,
    registry_fixture,  # noqa: F401
    start_registry,
)
from tarhelp import d, f, tar_bytes

# -- helpers ---------------------------------------------------------------------------------


def unique(registry: RegistryServer, name: str = "app", tag: str = "1") -> str:
    """A reference in a repository no other test uses."""
    return f"{registry.host}/t{uuid.uuid4().hex[:10]}/{name}:{tag}"


def layer(store: Store, tmp_path: Path, files: dict[str, bytes]) -> str:
    """A layer made from a directory (its diff_id re-tars to itself)."""
    root = tmp_path / f"layer-{uuid.uuid4().hex[:8]}"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return store.add_layer_dir(root)


def layered_image(store: Store, tmp_path: Path, ref: str, n: int = 3, *, salt: str = "",
                  base: list[str] | None = None) -> Image:
    """An image of ``base`` layers plus ``n`` new ones, each adding ``layerI.txt``."""
    salt = salt or uuid.uuid4().hex
    diff_ids = list(base or []) + [
        layer(store, tmp_path, {f"layer{i}.txt": f"{salt} {i}\n".encode(),
                                f"dir{i}/nested.txt": b"x" * (1000 * i)})
        for i in range(n)
    ]
    image = store.create_image(ImageConfig(cmd=("sh",), env=("A=1",)), diff_ids)
    store.tag(image.id, ref)
    return store.image(image.id)


def layer_files(store: Store, image: Image) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for diff_id in image.diff_ids:
        root = store.layer_path(diff_id)
        for path in sorted(root.rglob("*")):
            if path.is_file():
                found[str(path.relative_to(root))] = path.read_bytes()
    return found


def other_arch() -> str:
    return "arm64" if Platform.host().architecture != "arm64" else "amd64"


def config_with_arch(store: Store, image: Image, arch: str, ref: str) -> Image:
    """The same image, its config saying another architecture."""
    doc = store.config_document(image)
    doc["architecture"] = arch
    doc["config"]["Env"] = [f"ARCH={arch}"]
    return store.add_image_config(json.dumps(doc).encode(), ref=ref)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


@pytest.fixture
def other(tmp_path: Path) -> Store:
    """A second, empty store: where pulls go."""
    return Store(tmp_path / "other")


# -- references, platforms, credentials (no server) ------------------------------------------


@pytest.mark.parametrize("text, name, reference, local", [
    ("busybox", "docker.io/library/busybox", "latest", "busybox:latest"),
    ("docker.io/library/busybox:1.36", "docker.io/library/busybox", "1.36", "busybox:1.36"),
    ("index.docker.io/user/app", "docker.io/user/app", "latest", "user/app:latest"),
    ("localhost/app:v2", "localhost/app", "v2", "localhost/app:v2"),
    ("127.0.0.1:5000/a/b:c", "127.0.0.1:5000/a/b", "c", "127.0.0.1:5000/a/b:c"),
    ("ghcr.io/org/app@sha256:" + "a" * 64, "ghcr.io/org/app", "sha256:" + "a" * 64, None),
])
def test_references_normalize_as_docker(text: str, name: str, reference: str,
                                        local: str | None) -> None:
    ref = RegistryRef.parse(text)
    assert (ref.name, ref.reference, ref.local_tag) == (name, reference, local)
    assert RegistryRef.parse(str(ref)) == ref


def test_bad_references_are_usage_errors() -> None:
    for text in ("UPPER", "a/b:bad:tag", "app@sha256:short", "app@md5:" + "a" * 32, ""):
        with pytest.raises(UsageError, match="invalid"):
            RegistryRef.parse(text)


def test_docker_hub_names_are_stored_short() -> None:
    assert str(ImageRef.parse("docker.io/library/busybox")) == "busybox:latest"
    assert str(ImageRef.parse("docker.io/user/app:1")) == "user/app:1"
    assert str(ImageRef.parse("127.0.0.1:5000/app")) == "127.0.0.1:5000/app:latest"


def test_plain_http_only_on_loopback() -> None:
    assert all(map(is_loopback, ["localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3",
                                 "[::1]:5000"]))
    assert not any(map(is_loopback, ["docker.io", "10.0.0.1:5000", "localhost.example.com"]))
    assert RegistryRef.parse("busybox").api_host == "registry-1.docker.io"


def test_index_picks_the_platform() -> None:
    def entry(plat: str) -> Descriptor:
        p = Platform.parse(plat)
        return Descriptor(OCI_MANIFEST, "sha256:" + hashlib.sha256(plat.encode()).hexdigest(),
                          1, p)

    index = Index("x", tuple(map(entry, ["linux/arm/v6", "linux/arm/v7", "linux/arm64/v8",
                                          "linux/amd64", "windows/amd64"])))
    assert index.select(Platform.parse("linux/amd64"), "x").platform == Platform("linux",
                                                                                  "amd64")
    assert str(index.select(Platform.parse("linux/arm/v7"), "x").platform) == "linux/arm/v7"
    assert str(index.select(Platform.parse("linux/arm64"), "x").platform) == "linux/arm64/v8"
    with pytest.raises(RegistryError, match=r"no image for platform linux/s390x .*linux/amd64"):
        index.select(Platform.parse("linux/s390x"), "x")
    with pytest.raises(UsageError, match="invalid platform"):
        Platform.parse("amd64")


def test_challenges_parse() -> None:
    c = Challenge.parse('Bearer realm="https://auth.docker.io/token",service="registry.docker.io"'
                        ',scope="repository:library/busybox:pull,push"')
    assert c.scheme == "bearer" and c.get("realm") == "https://auth.docker.io/token"
    assert c.get("scope") == "repository:library/busybox:pull,push"
    assert Challenge.parse('Basic realm="x y"').get("realm") == "x y"


def test_credentials_from_the_docker_config(tmp_path: Path) -> None:
    pair = base64.b64encode(b"hubuser:hubpass").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": pair},
        "http://127.0.0.1:5000/v2/": {"username": "u", "password": "pw-secret"},
        "broken.example": {"auth": "not base64!"},
    }}))
    hub = load_credentials("docker.io", config_dir=tmp_path)
    assert hub is not None and (hub.username, hub.password) == ("hubuser", "hubpass")
    local = load_credentials("127.0.0.1:5000", config_dir=tmp_path)
    assert local is not None and (local.username, local.password) == ("u", "pw-secret")
    assert "pw-secret" not in repr(local)
    assert load_credentials("ghcr.io", config_dir=tmp_path) is None
    assert load_credentials("ghcr.io", config_dir=tmp_path / "missing") is None
    with pytest.raises(RegistryError, match="config.json: the auth of 'broken.example'"):
        load_credentials("broken.example", config_dir=tmp_path)


# -- pull and push against the real registry -------------------------------------------------


def test_multi_layer_round_trip_keeps_the_image_id(
    registry: RegistryServer, store: Store, other: Store, tmp_path: Path
) -> None:
    ref = unique(registry)
    image = layered_image(store, tmp_path, "local/app:1", n=3)
    events: list[str] = []
    digest = push(store, "local/app:1", ref, progress=lambda e: events.append(str(e)))
    assert digest.startswith("sha256:") and events[-1].endswith(f"digest: {digest} size: "
                                                                 f"{events[-1].split()[-1]}")
    assert sum("Pushed" in e for e in events) == 3

    events.clear()
    pulled = pull(other, ref, progress=lambda e: events.append(str(e)))
    assert pulled.id == image.id  # the config bytes travelled unchanged
    assert pulled.diff_ids == image.diff_ids and pulled.config == image.config
    assert pulled.tags == (ref,)
    assert layer_files(other, pulled) == layer_files(store, image)
    assert sum(e.endswith("Pulling fs layer") for e in events) == 3
    assert sum(e.endswith("Pull complete") for e in events) == 3
    assert f"Digest: {digest}" in events and events[-1] == f"Status: Downloaded newer image for {ref}"

    # again: nothing to download; by digest: no tag
    events.clear()
    assert pull(other, ref, progress=lambda e: events.append(str(e))).id == image.id
    assert events[-1] == f"Status: Image is up to date for {ref}"
    by_digest = f"{ref.rpartition(':')[0]}@{digest}"
    assert pull(Store(tmp_path / "third"), by_digest).tags == ()


def test_push_twice_uploads_nothing_new(registry: RegistryServer, store: Store,
                                        tmp_path: Path) -> None:
    ref = unique(registry)
    layered_image(store, tmp_path, "local/app:1", n=2)
    first = push(store, "local/app:1", ref)
    events: list[str] = []
    assert push(store, "local/app:1", ref, progress=lambda e: events.append(str(e))) == first
    assert sum("Layer already exists" in e for e in events) == 2
    assert not any("Pushed" in e for e in events)


def test_imported_image_pushes_with_the_diff_ids_of_what_it_uploads(
    registry: RegistryServer, store: Store, other: Store, busybox_tar: Path
) -> None:
    with open(busybox_tar, "rb") as fileobj:
        image = store.import_tar(fileobj, config=ImageConfig(cmd=("sh",)), ref="busybox")
    ref = unique(registry, "busybox", "latest")
    push(store, "busybox", ref)
    pulled = pull(other, ref)
    # the foreign tar is not kept, so its re-tar (another diff_id) is what was uploaded
    assert pulled.config == image.config and len(pulled.diff_ids) == 1
    assert layer_files(other, pulled) == layer_files(store, image)
    assert pulled.id == "sha256:" + hashlib.sha256(
        (other.images_dir / f"{pulled.id[7:]}.json").read_bytes()).hexdigest()


def test_pulled_busybox_runs(registry: RegistryServer, store_dir: Path,
                             busybox_tar: Path, tmp_path: Path) -> None:
    needs_root()
    source = Store(tmp_path / "source")
    with open(busybox_tar, "rb") as fileobj:
        source.import_tar(fileobj, config=ImageConfig(cmd=("sh",)), ref="busybox")
    ref = unique(registry, "busybox", "latest")
    push(source, "busybox", ref)
    pull(Store(store_dir), ref)
    result = pydock_cli("run", "--rm", ref, "cat", "/etc/group")
    assert result.returncode == 0, result.stderr.decode()
    assert b"extra:x:2000:app" in result.stdout


def test_layers_shared_between_images_are_stored_and_fetched_once(
    registry: RegistryServer, store: Store, other: Store, tmp_path: Path
) -> None:
    base = layered_image(store, tmp_path, "base:1", n=2)
    layered_image(store, tmp_path, "child:1", n=1, base=list(base.diff_ids))
    repo = unique(registry, "shared").rpartition(":")[0]
    push(store, "base:1", f"{repo}:base")
    push(store, "child:1", f"{repo}:child")

    pull(other, f"{repo}:base")
    events: list[str] = []
    child = pull(other, f"{repo}:child", progress=lambda e: events.append(str(e)))
    assert sum(e.endswith("Already exists") for e in events) == 2
    assert sum(e.endswith("Pull complete") for e in events) == 1
    assert len(child.diff_ids) == 3
    stored = [p for p in other.layers_dir.iterdir() if p.is_dir() and p.name != "empty"]
    assert len(stored) == 3
    manifest = json.loads(Repository(RegistryRef.parse(f"{repo}:child")).get_manifest(
        "child", "test")[0])
    path = repo.partition("/")[2]
    for blob in manifest["layers"]:
        assert registry.requests("GET", f"/v2/{path}/blobs/{blob['digest']}") == 1


def test_parallel_pulls_of_one_image_download_it_once(
    registry: RegistryServer, store: Store, other: Store, tmp_path: Path
) -> None:
    ref = unique(registry)
    layered_image(store, tmp_path, "local/app:1", n=3)
    push(store, "local/app:1", ref)
    code = ("import sys; from pydock import Store, pull; "
            "print(pull(Store(sys.argv[1]), sys.argv[2]).id)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(other.root), ref],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e.decode() for _, e in outputs]
    ids = {out.decode().strip() for out, _ in outputs}
    assert len(ids) == 1 and other.image(ref).id in ids
    manifest = json.loads(Repository(RegistryRef.parse(ref)).get_manifest("1", "test")[0])
    path = RegistryRef.parse(ref).repository
    for blob in manifest["layers"]:
        assert registry.requests("GET", f"/v2/{path}/blobs/{blob['digest']}") == 1


def test_index_with_several_platforms(registry: RegistryServer, store: Store,
                                      other: Store, tmp_path: Path) -> None:
    native = layered_image(store, tmp_path, "multi:native", n=1)
    arch = other_arch()
    foreign = config_with_arch(store, layered_image(store, tmp_path, "tmp:x", n=2), arch,
                               f"multi:{arch}")
    ref = unique(registry, "multi", "latest")
    digest = push_index(store, ["multi:native", f"multi:{arch}"], ref)

    events: list[str] = []
    pulled = pull(other, ref, progress=lambda e: events.append(str(e)))
    assert pulled.id == native.id and pulled.architecture == Platform.host().architecture
    assert f"Digest: {digest}" in events  # the index's digest, as docker shows it
    picked = pull(Store(tmp_path / "third"), ref, platform=f"linux/{arch}")
    assert picked.id == foreign.id and picked.config.env == (f"ARCH={arch}",)
    with pytest.raises(RegistryError, match=r"no image for platform linux/s390x"):
        pull(other, ref, platform="linux/s390x")
    with pytest.raises(UsageError, match="second image for platform"):
        push_index(store, ["multi:native", "multi:native"], ref)


def test_corrupt_layer_blob_is_refused_and_leaves_nothing(
    registry: RegistryServer, store: Store, other: Store, tmp_path: Path
) -> None:
    ref = unique(registry)
    image = layered_image(store, tmp_path, "local/app:1", n=2)
    push(store, "local/app:1", ref)
    manifest = json.loads(Repository(RegistryRef.parse(ref)).get_manifest("1", "test")[0])
    blob = registry.blob_file(manifest["layers"][1]["digest"])
    # a valid gzip tar of another content, padded to the same size: only the digest tells
    forged = gzip.compress(tar_bytes(d("dir1"), f("dir1/nested.txt", b"evil")), mtime=0)
    size = blob.stat().st_size
    assert len(forged) < size
    blob.write_bytes(forged + b"\0" * (size - len(forged)))

    with pytest.raises(RegistryError, match=r"digest mismatch for blob sha256:\w+.*refused"):
        pull(other, ref)
    assert other.images() == [] and not other.has_layer(image.diff_ids[1])
    assert not any(p.name.startswith("layer-") for p in other.tmp_dir.iterdir())


def test_corrupt_manifest_is_refused(registry: RegistryServer, store: Store,
                                     other: Store, tmp_path: Path) -> None:
    ref = unique(registry)
    layered_image(store, tmp_path, "local/app:1", n=1)
    digest = push(store, "local/app:1", ref)
    blob = registry.blob_file(digest)
    blob.write_bytes(blob.read_bytes().replace(b'"schemaVersion"', b' "schemaVersion"'))
    with pytest.raises(RegistryError, match=f"manifest digest mismatch: expected {digest}"):
        pull(other, ref)
    assert other.images() == []


def test_missing_tag_and_repository_are_clear_errors(
    registry: RegistryServer, store: Store, other: Store, tmp_path: Path
) -> None:
    ref = unique(registry)
    layered_image(store, tmp_path, "local/app:1", n=1)
    push(store, "local/app:1", ref)
    missing = ref.rpartition(":")[0] + ":nope"
    with pytest.raises(RegistryError, match=rf"{missing}: tag 'nope' not found in registry "
                                            rf"{registry.host} .*MANIFEST_UNKNOWN") as info:
        pull(other, missing)
    assert info.value.status == 404
    with pytest.raises(RegistryError, match=r"/app:1: tag '1' not found in registry "):
        pull(other, unique(registry))  # an unknown repository
    with pytest.raises(UsageError, match="no image name"):
        push(store, store.image("local/app:1").id)


def test_zstd_layers_in_an_oci_manifest(registry: RegistryServer, other: Store) -> None:
    zstandard = pytest.importorskip("zstandard")
    tar = tar_bytes(d("etc"), f("etc/zstd.txt", b"compressed with zstd\n"))
    blob = zstandard.ZstdCompressor().compress(tar)
    diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
    config = json.dumps({"architecture": Platform.host().architecture, "os": "linux",
                         "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    ref = RegistryRef.parse(unique(registry, "zstd"))
    repo = Repository(ref).for_push()
    layer_desc = Descriptor("application/vnd.oci.image.layer.v1.tar+zstd",
                            "sha256:" + hashlib.sha256(blob).hexdigest(), len(blob))
    config_desc = Descriptor(OCI_CONFIG, "sha256:" + hashlib.sha256(config).hexdigest(),
                             len(config))
    repo.upload_blob(io.BytesIO(blob), layer_desc, "test")
    repo.upload_blob(io.BytesIO(config), config_desc, "test")
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": config_desc.to_json(),
                           "layers": [layer_desc.to_json()]}).encode()
    repo.put_manifest(ref.reference, manifest, OCI_MANIFEST, "test")
    pulled = pull(other, str(ref))
    assert pulled.id == config_desc.digest and pulled.diff_ids == (diff_id,)
    assert (other.layer_path(diff_id) / "etc/zstd.txt").read_bytes() == b"compressed with zstd\n"


def test_plain_http_elsewhere_needs_the_option(registry: RegistryServer, store: Store,
                                               other: Store, tmp_path: Path) -> None:
    name = socket.gethostname()
    try:
        resolves_to_loopback = socket.gethostbyname(name) == "127.0.0.1"
    except OSError:
        resolves_to_loopback = False
    if not resolves_to_loopback or "." in name:
        pytest.skip(f"the host name {name!r} does not resolve to 127.0.0.1")
    ref = unique(registry).replace("127.0.0.1", name)
    layered_image(store, tmp_path, "local/app:1", n=1)
    with pytest.raises(RegistryError, match=rf"cannot reach registry {name}:\d+ .*"
                                            rf"--insecure-registry {name}:\d+"):
        push(store, "local/app:1", ref)
    push(store, "local/app:1", ref, insecure=True)
    assert pull(other, ref, insecure=True).tags == (ref,)


# -- auth ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryServer,
                                                                              TokenServer]]:
    """A registry with token auth (Docker Hub's flow): anonymous pull, push for the user."""
    require_service(shutil.which("docker-registry") is not None, "docker-registry")
    pytest.importorskip("cryptography")
    workdir = tmp_path_factory.mktemp("token-registry")
    tokens = TokenServer(workdir, {"alice": "s3cret"})
    server = start_registry(workdir, auth=tokens.auth_yaml())
    yield server, tokens
    server.stop()
    tokens.stop()


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry with htpasswd (basic) auth for the user bob."""
    require_service(shutil.which("docker-registry") is not None, "docker-registry")
    bcrypt = pytest.importorskip("bcrypt")
    workdir = tmp_path_factory.mktemp("basic-registry")
    hashed = bcrypt.hashpw(b"hunter2", bcrypt.gensalt(rounds=4)).decode()
    (workdir / "htpasswd").write_text(f"bob:{hashed}\n")
    server = start_registry(
        workdir, auth=f"  htpasswd:\n    realm: pydock-test\n    path: {workdir / 'htpasswd'}\n")
    yield server
    server.stop()


def test_bearer_tokens_anonymous_pull_and_authenticated_push(
    token_registry: tuple[RegistryServer, TokenServer], store: Store, other: Store,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, tokens = token_registry
    ref = unique(server)
    image = layered_image(store, tmp_path, "local/app:1", n=2)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nobody"))
    with pytest.raises(RegistryError, match=rf"registry {server.host} requires authentication for "
                                            rf"pull,push access to t\w+/app \(HTTP 401.*no credentials "
                                            rf"for {server.host} in .*nobody/config.json"):
        push(store, "local/app:1", ref)

    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "alice", server.host,
                                                          "alice", "s3cret")))
    push(store, "local/app:1", ref)
    repository = RegistryRef.parse(ref).repository
    assert tokens.issued[-1] == ("alice", (f"repository:{repository}:pull,push",))

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nobody"))
    assert pull(other, ref).id == image.id  # anonymous token, pull only
    assert tokens.issued[-1] == ("", (f"repository:{repository}:pull",))

    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "mallory", server.host,
                                                          "alice", "wrong")))
    with pytest.raises(RegistryError, match=r"token server .* refused a token .*HTTP 401.*check "
                                            r"the credentials"):
        pull(Store(tmp_path / "third"), ref)


def test_basic_auth_from_the_docker_config(
    basic_registry: RegistryServer, store: Store, other: Store, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = unique(basic_registry)
    image = layered_image(store, tmp_path, "local/app:1", n=1)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nobody"))
    with pytest.raises(RegistryError, match="requires authentication .*HTTP 401") as info:
        push(store, "local/app:1", ref)
    assert info.value.status == 401
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "bob", basic_registry.host,
                                                          "bob", "hunter2")))
    push(store, "local/app:1", ref)
    assert pull(other, ref).id == image.id
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "eve", basic_registry.host,
                                                          "bob", "guess")))
    with pytest.raises(RegistryError, match="refused pull access to t\\w+/app to bob"):
        pull(Store(tmp_path / "third"), ref)


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_push_and_pull_print_docker_progress(
    registry: RegistryServer, store_dir: Path, tmp_path: Path
) -> None:
    source = Store(tmp_path / "source")
    layered_image(source, tmp_path, "local/app:1", n=2)
    ref = unique(registry)
    result = pydock_cli("--store", str(source.root), "push", "local/app:1", ref)
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert lines[0] == f"The push refers to repository [{ref.rpartition(':')[0]}]"
    assert sum(line.endswith(": Pushed") for line in lines) == 2
    assert lines[-1].startswith("1: digest: sha256:")

    result = pydock_cli("pull", ref)
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert lines[0] == f"1: Pulling from {RegistryRef.parse(ref).repository}"
    assert sum(line.endswith(": Pulling fs layer") for line in lines) == 2
    assert sum(line.endswith(": Download complete") for line in lines) == 2
    assert lines[-3].startswith("Digest: sha256:")
    assert lines[-2:] == [f"Status: Downloaded newer image for {ref}", ref]
    images = pydock_cli("images").stdout.decode()
    name, _, tag = ref.rpartition(":")
    assert any(row.split()[:2] == [name, tag] for row in images.splitlines())

    result = pydock_cli("pull", "-q", ref)
    assert (result.returncode, result.stdout.decode()) == (0, f"{ref}\n")


@pytest.mark.parametrize("args, message", [
    (["pull", "{host}/t0/none:gone"], "tag 'gone' not found in registry {host}"),
    (["pull", "Bad Ref"], "invalid reference format"),
    (["pull", "--platform", "amd64", "{host}/a:1"], "invalid platform"),
    (["push", "nosuchimage", "{host}/a:1"], "image not found: nosuchimage"),
])
def test_cli_errors_are_one_line_and_exit_125(
    registry: RegistryServer, store_dir: Path, args: list[str], message: str
) -> None:
    result = pydock_cli(*(a.format(host=registry.host) for a in args))
    stderr = result.stderr.decode()
    assert result.returncode == 125, stderr
    assert stderr.startswith("pydock: error: ") and stderr.count("\n") == 1, stderr
    assert message.format(host=registry.host) in stderr


# -- Docker on the other end -----------------------------------------------------------------


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "version"], capture_output=True, timeout=60).returncode == 0


def docker(*args: str, input: bytes | None = None) -> str:
    result = subprocess.run(["docker", *args], input=input, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def test_docker_pulls_what_pydock_pushed(registry: RegistryServer, store: Store,
                                         tmp_path: Path) -> None:
    require_service(_docker_answers(), "a Docker daemon")
    ref = unique(registry)
    image = layered_image(store, tmp_path, "local/app:1", n=3)
    push(store, "local/app:1", ref)
    try:
        docker("pull", ref)
        doc = json.loads(docker("image", "inspect", ref))[0]
        assert doc["Id"] == image.id
        assert doc["RootFS"]["Layers"] == list(image.diff_ids)
        assert doc["Config"]["Env"] == ["A=1"]
    finally:
        subprocess.run(["docker", "rmi", ref], capture_output=True, timeout=120)


def test_pydock_pulls_what_docker_pushed(registry: RegistryServer, other: Store,
                                         busybox_tar: Path) -> None:
    require_service(_docker_answers(), "a Docker daemon")
    ref = unique(registry, "fromdocker", "v1")
    try:
        docker("import", "--change", 'CMD ["sh"]', str(busybox_tar), ref)
        docker_id = json.loads(docker("image", "inspect", ref))[0]["Id"]
        docker("push", ref)
    finally:
        subprocess.run(["docker", "rmi", ref], capture_output=True, timeout=120)
    pulled = pull(other, ref)
    assert pulled.id == docker_id and pulled.config.cmd == ("sh",)
    assert (other.layer_path(pulled.diff_ids[0]) / "bin/busybox").stat().st_size == \
        os.stat(shutil.which("busybox") or "/bin/busybox").st_size
