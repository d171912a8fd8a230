"""COPY, ADD and WORKDIR's mkdir: which files go where (Docker's destination rules), their
cache-key digest, and the step that writes them into a layer."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
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
from ..errors import PydockError
from ..expand import parse_heredoc_marker
from ..models import ImageConfig
from . import steps
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
    dir_syntax = dest_raw.endswith("/") or dest_raw in (".", "..") or dest_raw.endswith("/.")
    chown = ins.flag("chown")
    chmod = _chmod(ins, builder)
    heredocs = {doc.name: doc for doc in ins.heredocs}
    docs = [heredocs[m.name] for s in sources if (m := parse_heredoc_marker(s)) is not None
            and m.name in heredocs]
    files = [s for s in sources if parse_heredoc_marker(s) is None]
    words = json.dumps([ins.cmd, sources, dest, dir_syntax, chown, chmod])
    from_ref = ins.flag("from")
    if from_ref is not None:
        return _plan_from(builder, ins, stage, files, dest, dir_syntax, chown, chmod, words)
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

    def execute(doc: dict[str, Any], data: bytes) -> dict[str, Any]:
        image = steps_image(data)
        with steps.container_of(builder.backend, image, builder.container_options(config)) as c:
            try:
                owner = steps.owner_of(chown, c)
                into_dir = dir_syntax or count > 1 or any(m.is_dir for m in matches) or \
                    steps.dest_is_dir(c, dest)
                entries, archives = _entries(builder, ins, c, matches, downloads, docs, dest,
                                             into_dir)
                diff_id = _write(builder, c, entries, archives, owner, chmod)
            except steps.StepFailed as exc:
                raise builder._error(ins.line, ins.cmd, f"{ins.cmd} failed: {exc}") from None
            except PydockError as exc:
                raise builder._error(ins.line, ins.cmd, f"{ins.cmd} failed: {exc}") from None
        doc["rootfs"]["diff_ids"].append(diff_id)
        builder._history(doc, f"/bin/sh -c #(nop) {ins.cmd} {digest} in {dest} ", empty=False)
        return doc

    return parts, execute


def steps_image(data: bytes) -> Any:
    from .engine import image_of
    return image_of(data)


def _entries(builder: Builder, ins: df.Instruction, c: Any, matches: list[Match],
             downloads: list[Download], docs: list[df.Heredoc], dest: str, into_dir: bool
             ) -> tuple[list[steps.Entry], list[str]]:
    ctx = builder.context
    entries: list[steps.Entry] = []
    archives: list[str] = []
    if into_dir and not steps.dest_is_dir(c, dest):
        single_dir = len(matches) == 1 and matches[0].is_dir and not downloads and not docs
        # A directory's contents copied to a new place: the new directory is made like the
        # source directory (mode, time); otherwise 0755 and now.
        entries.append(steps.Entry(dest, source=str(ctx.full_path(matches[0].rel)))
                       if single_dir else steps.Entry(dest, is_dir=True, mode=0o755))
    for match in matches:
        full = str(ctx.full_path(match.rel))
        if match.is_dir:
            cut = len(match.rel) + 1 if match.rel else 0
            for rel in ctx.below(match.rel):
                entries.append(steps.Entry(posixpath.join(dest, rel[cut:]),
                                           source=str(ctx.full_path(rel))))
        elif ins.cmd == "ADD" and _is_archive(full):
            archives.append(full)
        else:
            target = posixpath.join(dest, posixpath.basename(match.rel)) if into_dir else dest
            entries.append(steps.Entry(target, source=full))
    for download in downloads:
        name = posixpath.basename(urllib.parse.urlparse(download.url).path) or "index.html"
        target = posixpath.join(dest, name) if into_dir else dest
        entries.append(steps.Entry(target, source=download.path, mode=0o600))
    for doc in docs:
        target = posixpath.join(dest, doc.name) if into_dir else dest
        entries.append(steps.Entry(target, data=doc.data.encode()))
    if archives and not into_dir:
        entries.insert(0, steps.Entry(dest, is_dir=True, mode=0o755))
    return entries, archives


def _write(builder: Builder, c: Any, entries: list[steps.Entry], archives: list[str],
           owner: tuple[int, int], chmod: int | None) -> str:
    if not archives:
        return steps.write_entries(builder.backend, c, entries, owner=owner, chmod=chmod)
    if entries:
        steps.write_entries(builder.backend, c, entries, owner=owner, chmod=chmod)
    dest = entries[0].dest if entries and entries[0].is_dir else None
    for archive in archives:
        steps.extract_into(c, archive, dest or "/")
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


def _plan_from(builder: Builder, ins: df.Instruction, stage: df.Stage, files: list[str],
               dest: str, dir_syntax: bool, chown: str | None, chmod: int | None, words: str
               ) -> tuple[tuple[str, ...], Execute]:
    """COPY --from=STAGE|IMAGE: sources are paths in that stage's (or image's) filesystem."""
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
        src_data = (builder.store.images_dir / f"{image.id.removeprefix('sha256:')}.json"
                    ).read_bytes()
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
                owner = steps.owner_of(chown, c) if chown else None
                into_dir = dir_syntax or len(files) > 1 or steps.dest_is_dir(c, dest)
                with tempfile.SpooledTemporaryFile(64 << 20, dir=str(builder.store.tmp_dir)) as buf:
                    if into_dir and not steps.dest_is_dir(c, dest):
                        steps.write_entries(builder.backend, c,
                                            [steps.Entry(dest, is_dir=True, mode=0o755)],
                                            owner=owner or (0, 0), chmod=None)
                    for source in files:
                        path = posixpath.normpath(posixpath.join("/", source))
                        info = steps.rootfs.stat_path(src, path)
                        if info is None:
                            raise steps.StepFailed(f"{source}: not found in {ref}")
                        tar = steps.copy_from_image(src, path)
                        if info.is_dir:
                            target = dest
                        else:
                            target = posixpath.join(dest, posixpath.basename(path)) \
                                if into_dir else dest
                        buf.seek(0)
                        buf.truncate()
                        steps.retarget(tar, strip_top=info.is_dir, dest=target, owner=owner,
                                       chmod=chmod, fileobj=buf)  # type: ignore[arg-type]
                        buf.seek(0)
                        steps.rootfs.copy_in(c, buf, "/", archive=True)  # type: ignore[arg-type]
                diff_id = steps.snapshot(builder.backend, c)
            except steps.StepFailed as exc:
                raise builder._error(ins.line, "COPY", f"COPY failed: {exc}") from None
            except PydockError as exc:
                raise builder._error(ins.line, "COPY", f"COPY failed: {exc}") from None
        doc["rootfs"]["diff_ids"].append(diff_id)
        builder._history(doc, f"/bin/sh -c #(nop) COPY from {ref} in {dest} ", empty=False)
        return doc

    return parts, execute


def make_workdir(builder: Builder, doc: dict[str, Any], config: ImageConfig) -> bool:
    """WORKDIR creates its directory when missing (a layer holding it); True if it did."""
    path = config.working_dir or "/"
    if path == "/":
        return False
    from .cache import encode
    from .engine import image_of
    image = image_of(encode(doc))
    with steps.container_of(builder.backend, image, builder.container_options(config)) as c:
        if steps.dest_is_dir(c, path):
            return False
        diff_id = steps.write_entries(builder.backend, c, [steps.Entry(path, is_dir=True,
                                                                        mode=0o755)],
                                      owner=(0, 0), chmod=None)
    doc["rootfs"]["diff_ids"].append(diff_id)
    builder._history(doc, f"/bin/sh -c #(nop) WORKDIR {path}", empty=False)
    return True
