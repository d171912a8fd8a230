"""COPY, ADD and WORKDIR's mkdir: which files go where (Docker's destination rules), their
cache-key digest, and the step that writes them into a layer."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from .. import dockerfile as df
from ..backends.native import rootfs
from ..errors import PydockError
from ..expand import parse_heredoc_marker
from ..models import ImageConfig
from . import history, metadata, paths, steps
from .cache import step_key
from .context import ContextError, Match, has_wildcard

if TYPE_CHECKING:
    from .engine import Builder, StageState

Execute = Callable[[dict[str, Any], bytes], dict[str, Any]]


@dataclass(frozen=True)
class Download:
    """An ADD URL fetched at planning time (its content keys the cache, as in Docker)."""

    url: str
    path: str
    digest: str
    mtime: float | None


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _chmod(ins: df.Instruction, builder: Builder) -> int | None:
    value = ins.flag("chmod")
    if value is None:
        return None
    try:
        mode = int(value, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise builder._error(ins.line, ins.cmd, f"invalid --chmod={value}: expected an octal "
                             "mode such as 755")
    return mode


def plan(builder: Builder, ins: df.Instruction, state: StageState, config: ImageConfig,
         stage: df.Stage) -> tuple[tuple[str, ...], Execute]:
    """Cache-key parts and the executor of a COPY/ADD step."""
    *sources, dest_raw = ins.args
    workdir = config.working_dir or "/"
    dest = posixpath.normpath(posixpath.join(workdir, dest_raw))
    # "dir/" and "." name a directory; "dir/." does not (Docker cleans it to "dir")
    dir_syntax = dest_raw.endswith("/") or dest_raw == "."
    chown = ins.flag("chown")
    chmod = _chmod(ins, builder)
    heredocs = {doc.name: doc for doc in ins.heredocs}
    docs = [heredocs[m.name] for s in sources if (m := parse_heredoc_marker(s)) is not None
            and m.name in heredocs]
    files = [s for s in sources if parse_heredoc_marker(s) is None]
    words = json.dumps([ins.cmd, sources, dest, dir_syntax, chown, chmod])
    from_ref = ins.flag("from")
    if from_ref is not None:
        return _plan_from(builder, ins, stage, config, files, dest, dest_raw, dir_syntax,
                          chown, chmod, words)
    matches: list[Match] = []
    downloads: list[Download] = []
    try:
        for source in files:
            if ins.cmd == "ADD" and _is_url(source):
                downloads.append(_download(builder, ins, source))
            else:
                matches.extend(builder.context.resolve(source))
    except ContextError as exc:
        raise builder._error(ins.line, ins.cmd, f"{ins.cmd} failed: {exc}") from None
    count = len(matches) + len(downloads) + len(docs)
    if count > 1 and not dir_syntax:
        raise builder._error(ins.line, ins.cmd, f"When using {ins.cmd} with more than one "
                             "source file, the destination must be a directory and end with a /")
    digest = builder.context.digest(matches)
    extra = [d.digest for d in downloads] + [hashlib.sha256(d.data.encode()).hexdigest()
                                             for d in docs]
    parts = (ins.cmd, words, digest, *extra)
    kinds = ["dir" if m.is_dir else "file" for m in matches] + ["file"] * (len(downloads)
                                                                            + len(docs))
    created_by = history.copy_text(ins.cmd, chown, _source_hash(kinds, [digest, *extra]),
                                   dest_raw)

    def execute(doc: dict[str, Any], data: bytes) -> dict[str, Any]:
        image = steps_image(data)
        with steps.container_of(builder.backend, image, builder.container_options(config)) as c:
            try:
                fs = paths.ImageFS(rootfs._lowers(c))
                owner = steps.owner_of(chown, fs)
                target = fs.resolve(dest)
                into_dir = dir_syntax or count > 1 or fs.is_dir(target)
                entries, archives = _entries(builder, ins, fs, matches, downloads, docs, target,
                                             into_dir, owner)
                diff_id = _write(builder, c, entries, archives, target, owner, chmod)
            except (steps.StepFailed, paths.PathError, PydockError) as exc:
                raise builder._error(ins.line, ins.cmd, f"{ins.cmd} failed: {exc}") from None
        builder._commit(doc, diff_id, history.nop_word(metadata.shell_of(config), created_by))
        return doc

    return parts, execute


def _source_hash(kinds: list[str], digests: list[str]) -> str:
    """The classic builder's source hash in the history: ``file:``/``dir:`` for one source,
    ``multi:`` for several (the hash itself is pydock's content digest)."""
    text = "\0".join(digests)
    kind = kinds[0] if len(kinds) == 1 else "multi"
    return f"{kind}:{hashlib.sha256(text.encode()).hexdigest()}"


def steps_image(data: bytes) -> Any:
    from .engine import image_of
    return image_of(data)


def _new_dirs(fs: paths.ImageFS, path: str, *, for_dir: bool = False) -> list[steps.Entry]:
    """Directories to create on the way to ``path`` (and ``path`` itself): 0755, owned by
    the copy's owner.  ``for_dir``: ``path`` receives a directory's contents; its parents
    are then root's (Docker makes them before it chowns what it copied)."""
    new = fs.missing(path)
    return [steps.Entry(p, is_dir=True, mode=0o755,
                        owner=(0, 0) if for_dir and p != new[-1] else None) for p in new]


def _entries(builder: Builder, ins: df.Instruction, fs: paths.ImageFS, matches: list[Match],
             downloads: list[Download], docs: list[df.Heredoc], target: str, into_dir: bool,
             owner: tuple[int, int]) -> tuple[list[steps.Entry], list[str]]:
    """What a COPY/ADD writes (parents first) and the local archives ADD unpacks into
    ``target`` (the destination with symlinks resolved)."""
    ctx = builder.context
    entries: list[steps.Entry] = []
    archives: list[str] = []
    files = [m for m in matches if not m.is_dir and not (
        ins.cmd == "ADD" and _is_archive(str(ctx.full_path(m.rel))))]
    archives = [str(ctx.full_path(m.rel)) for m in matches if not m.is_dir and m not in files]
    if into_dir or any(m.is_dir for m in matches) or archives:
        entries.extend(_new_dirs(fs, target, for_dir=bool(matches) and matches[0].is_dir))
    else:
        entries.extend(_new_dirs(fs, posixpath.dirname(target)))
    for match in matches:
        if match.is_dir:
            cut = len(match.rel) + 1 if match.rel else 0
            for rel in ctx.below(match.rel):
                entries.append(steps.Entry(posixpath.join(target, rel[cut:]),
                                           source=str(ctx.full_path(rel)),
                                           mode=0o755 if ctx.is_implied(rel) else None))
        elif match in files:
            name = posixpath.join(target, posixpath.basename(match.rel)) if into_dir else target
            entries.append(steps.Entry(name, source=str(ctx.full_path(match.rel))))
    for download in downloads:
        name = posixpath.basename(urllib.parse.urlparse(download.url).path) or "index.html"
        entries.append(steps.Entry(posixpath.join(target, name) if into_dir else target,
                                   source=download.path, mode=0o600))
    for doc in docs:
        entries.append(steps.Entry(posixpath.join(target, doc.name) if into_dir else target,
                                   data=doc.data.encode()))
    return entries, archives


def _write(builder: Builder, c: Any, entries: list[steps.Entry], archives: list[str],
           target: str, owner: tuple[int, int], chmod: int | None) -> str | None:
    """Write the entries (owned by ``owner``, set-id bits dropped as Docker's chown drops
    them), unpack the archives into ``target`` (their owners kept), snapshot."""
    if entries:
        steps.write_entries(c, entries, owner=owner, chmod=chmod, strip_setid=True)
    for archive in archives:
        steps.extract_into(c, archive, target)
    return steps.snapshot(builder.backend, c)


def _is_archive(path: str) -> bool:
    """A local file ADD unpacks: a tar, plain or compressed (gzip, bzip2, xz)."""
    try:
        with tarfile.open(path, "r:*") as tar:
            return tar.next() is not None
    except (tarfile.TarError, OSError, EOFError):
        return False


def _download(builder: Builder, ins: df.Instruction, url: str) -> Download:
    fd, path = tempfile.mkstemp(prefix=f"add-{os.getpid()}-", dir=builder.store.tmp_dir)
    builder.temp_files.append(path)
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(fd, "wb") as out:
            while chunk := response.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
            modified = response.headers.get("Last-Modified")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise builder._error(ins.line, "ADD", f"cannot download {url}: {reason}") from None
    mtime = None
    if modified:
        try:
            mtime = parsedate_to_datetime(modified).timestamp()
        except (TypeError, ValueError):
            mtime = None
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    checksum = ins.flag("checksum")
    if checksum is not None and checksum != f"sha256:{h.hexdigest()}":
        raise builder._error(ins.line, "ADD", f"checksum mismatch for {url}: expected "
                             f"{checksum}, got sha256:{h.hexdigest()}")
    return Download(url, path, h.hexdigest(), mtime)


def _plan_from(builder: Builder, ins: df.Instruction, stage: df.Stage, config: ImageConfig,
               files: list[str], dest: str, dest_raw: str, dir_syntax: bool, chown: str | None,
               chmod: int | None, words: str) -> tuple[tuple[str, ...], Execute]:
    """COPY --from=STAGE|IMAGE: sources are paths in that stage's (or image's) filesystem.
    Without --chown the files keep their owners (and set-id bits), as in Docker."""
    from .engine import _stage_ref
    ref = ins.flag("from") or ""
    dep = _stage_ref(builder.dfile, ref, before=stage.index)
    if dep is not None:
        src_key, src_data = builder.results[dep.index]
    else:
        try:
            image = builder.store.image(ref)
        except PydockError:
            raise builder._error(ins.line, "COPY", f"--from={ref}: no stage or image by that "
                                 "name") from None
        src_key = step_key("image", image.id)
        src_data = builder.store.config_bytes(image)
    for source in files:
        if has_wildcard(source):
            raise builder._error(ins.line, "COPY", f"--from with a wildcard source ({source}) "
                                 "is not supported")
    if len(files) > 1 and not dir_syntax:
        raise builder._error(ins.line, "COPY", "When using COPY with more than one source "
                             "file, the destination must be a directory and end with a /")
    parts = ("COPY-from", words, src_key)

    def execute(doc: dict[str, Any], data: bytes) -> dict[str, Any]:
        src_image = steps_image(src_data)
        opts = builder.container_options(ImageConfig())
        with steps.container_of(builder.backend, src_image, opts) as src, \
                steps.container_of(builder.backend, steps_image(data), opts) as c:
            try:
                fs = paths.ImageFS(rootfs._lowers(c))
                src_fs = paths.ImageFS(rootfs._lowers(src))
                owner = steps.owner_of(chown, fs) if chown else None
                target = fs.resolve(dest)
                into_dir = dir_syntax or len(files) > 1 or fs.is_dir(target)
                kinds = []
                with tempfile.SpooledTemporaryFile(64 << 20, dir=str(builder.store.tmp_dir)) as buf:
                    for source in files:
                        path = src_fs.resolve(posixpath.join("/", source))
                        info = src_fs.lstat(path)
                        if info is None:
                            raise steps.StepFailed(f"{source}: not found in {ref}")
                        is_dir = stat.S_ISDIR(info.st_mode)
                        kinds.append("dir" if is_dir else "file")
                        name = target if is_dir or not into_dir else \
                            posixpath.join(target, posixpath.basename(path))
                        new = _new_dirs(fs, name if is_dir else posixpath.dirname(name),
                                        for_dir=is_dir)
                        if new:
                            steps.write_entries(c, new, owner=owner or (0, 0), chmod=None)
                        tar = steps.copy_from_image(src, path)
                        buf.seek(0)
                        buf.truncate()
                        steps.retarget(tar, strip_top=is_dir, dest=name, owner=owner,
                                       chmod=chmod, fileobj=buf)  # type: ignore[arg-type]
                        buf.seek(0)
                        steps.rootfs.copy_in(c, buf, "/", archive=True)  # type: ignore[arg-type]
                diff_id = steps.snapshot(builder.backend, c)
            except (steps.StepFailed, paths.PathError, PydockError) as exc:
                raise builder._error(ins.line, "COPY", f"COPY failed: {exc}") from None
        source_hash = _source_hash(kinds, [src_key, *files])
        builder._commit(doc, diff_id, history.nop_word(
            metadata.shell_of(config), history.copy_text("COPY", chown, source_hash, dest_raw)))
        return doc

    return parts, execute


def make_workdir(builder: Builder, doc: dict[str, Any], config: ImageConfig) -> None:
    """WORKDIR: the directory and its missing parents are made, 0755, owned by USER (as
    BuildKit does; the classic builder leaves them root's, so that ``USER app`` + ``WORKDIR``
    + ``RUN`` writing there fails); a layer only when something was made."""
    path = config.working_dir or "/"
    shell = metadata.shell_of(config)
    text = history.nop_word(shell, f"WORKDIR {path}")
    if path == "/":
        builder._commit(doc, None, text)
        return
    from .cache import encode
    from .engine import image_of
    image = image_of(encode(doc))
    with steps.container_of(builder.backend, image, builder.container_options(config)) as c:
        fs = paths.ImageFS(rootfs._lowers(c))
        try:
            new = _new_dirs(fs, fs.resolve(path))
        except paths.PathError as exc:
            raise steps.StepFailed(f"WORKDIR {path}: {exc}") from None
        diff_id = None
        if new:
            steps.write_entries(c, new, owner=steps.user_owner(config.user, fs), chmod=None)
            diff_id = steps.snapshot(builder.backend, c)
    builder._commit(doc, diff_id, text)
