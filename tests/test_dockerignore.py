""".dockerignore: moby/patternmatcher's own cases (reading, matching) and BuildKit's walk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydock import dockerignore
from pydock.dockerignore import IgnoreRules, load, read_patterns, walk_context
from pydock.errors import DockerfileError


def test_read_patterns_like_ignorefile_readall() -> None:
    text = ("test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n"
            "! /inverted/abs/path\n!\n! ")
    assert read_patterns(text) == ["test1", "test2", "a/file/here", "lastfile",
                                   "!inverted/abs/path", "!", "!"]


def test_read_patterns_cleaning() -> None:
    text = ("\ufeff./a\nb/\nc/../d\n  spaced  \n #not-a-comment\n**/x/\n/\n../up\n\t\n"
            "e//f\n!./g/\n")
    assert read_patterns(text) == ["a", "b", "d", "spaced", "#not-a-comment", "**/x", "/",
                                   "../up", "e/f", "!g"]


def test_lone_exclamation_is_an_error() -> None:
    with pytest.raises(DockerfileError) as exc:
        IgnoreRules.parse("a\n!\n")
    assert str(exc.value) == '.dockerignore:2: illegal exclusion pattern: "!"'


# patternmatcher_test.go TestMatches: (pattern, path, matches) for MatchesOrParentMatches
MATCHES = [
    ("**", "file", True), ("**/", "file", True), ("**", "dir/file", True),
    ("**/", "dir/file", True), ("**/**", "dir/file", True), ("dir/**", "dir/file", True),
    ("dir/**", "dir/dir2/file", True), ("**/dir", "dir", True), ("**/dir", "dir/file", True),
    ("**/dir2/*", "dir/dir2/file", True), ("**/dir2/*", "dir/dir2/file/", True),
    ("**/dir2/**", "dir/dir2/dir3/file", True), ("**file", "file", True),
    ("**file", "dir/file", True), ("**/file", "dir/file", True), ("**file", "dir/dir/file", True),
    ("**/file", "dir/dir/file", True), ("**/file*", "dir/dir/file", True),
    ("**/file*", "dir/dir/file.txt", True), ("**/file*txt", "dir/dir/file.txt", True),
    ("**/file*.txt", "dir/dir/file.txt", True), ("**/file*.txt*", "dir/dir/file.txt", True),
    ("**/**/*.txt", "dir/dir/file.txt", True), ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True), ("**/**/*.txt", "file.txt", True),
    ("a**/*.txt", "a/file.txt", True), ("a**/*.txt", "a/dir/file.txt", True),
    ("a**/*.txt", "a/dir/dir/file.txt", True), ("a/*.txt", "a/dir/file.txt", False),
    ("a/*.txt", "a/file.txt", True), ("a/*.txt**", "a/file.txt", True),
    ("a[b-d]e", "ae", False), ("a[b-d]e", "ace", True), ("a[b-d]e", "aae", False),
    ("a[^b-d]e", "aze", True), (".*", ".foo", True), (".*", "foo", False),
    ("abc.def", "abcdef", False), ("abc.def", "abc.def", True), ("abc.def", "abcZdef", False),
    ("abc?def", "abcZdef", True), ("abc?def", "abcdef", False), ("**/foo/bar", "foo/bar", True),
    ("**/foo/bar", "dir/foo/bar", True), ("**/foo/bar", "dir/dir2/foo/bar", True),
    ("abc/**", "abc", False), ("abc/**", "abc/def", True), ("abc/**", "abc/def/ghi", True),
    ("**/.foo", ".foo", True), ("**/.foo", "bar.foo", False), ("a(b)c/def", "a(b)c/def", True),
    ("a(b)c/def", "a(b)c/xyz", False), ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", True),
    ("a\\\\", "a\\", True), ("a\\*b", "a*b", True),
    # Go's filepath.Match cases (patternmatcher's matchTests)
    ("abc", "abc", True), ("*", "abc", True), ("*c", "abc", True), ("a*", "a", True),
    ("a*", "abc", True), ("a*", "ab/c", True), ("a*/b", "abc/b", True), ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True), ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False), ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True), ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True), ("ab[b-d]", "abc", True), ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False), ("ab[^b-d]", "abc", False), ("ab[^e-g]", "abc", True),
    ("a\\*b", "ab", False), ("a?b", "a☺b", True), ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False), ("a[^a][^a][^a]b", "a☺b", False), ("[a-ζ]*", "α", True),
    ("*[a-ζ]", "A", False), ("a?b", "a/b", False), ("a*b", "a/b", False), ("[\\]a]", "]", True),
    ("[\\-]", "-", True), ("[x\\-]", "x", True), ("[x\\-]", "-", True), ("[x\\-]", "z", False),
    ("[\\-x]", "x", True), ("[\\-x]", "-", True), ("[\\-x]", "a", False), ("*x", "xxx", True),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), MATCHES)
def test_matches(pattern: str, path: str, expected: bool) -> None:
    assert IgnoreRules([pattern]).excluded(path) is expected


@pytest.mark.parametrize("pattern", ["[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^",
                                     "[^bc", "a[", "[z-a]"])
def test_bad_patterns(pattern: str) -> None:
    with pytest.raises(DockerfileError, match="bad pattern"):
        IgnoreRules([pattern])


@pytest.mark.parametrize(
    ("patterns", "path", "expected"),
    [
        (["**", "!util/docker/web"], "util/docker/web/foo", False),
        (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
        (["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", False),
        (["!fileutils.go", "*.go"], "fileutils.go", True),
        (["*.go", "!fileutils.go"], "fileutils.go", False),
        (["docs", "!docs/README.md"], "docs/README.md", False),
        (["docs/", "!docs/README.md"], "docs/README.md", False),
        (["docs/*", "!docs/README.md"], "docs/README.md", False),
        (["docs", "!docs/README.md"], "docs/other.md", True),
        (["docs", "!docs/README.md"], "docs", True),
        (["*", "!*.go"], "src/main.go", True),        # "*" excludes src; "*.go" is top-level only
        (["*", "!**/*.go"], "src/main.go", False),
        (["*.md", "!README*.md", "README-secret.md"], "README-secret.md", True),
        (["*.md", "!README*.md", "README-secret.md"], "README.md", False),
        (["/abs/path"], "abs/path", True),
        (["./rel"], "rel/x", True),
        (["*.go"], ".", False),                          # the root is never excluded
    ],
)
def test_last_matching_pattern_wins(patterns: list[str], path: str, expected: bool) -> None:
    rules = IgnoreRules([line for text in patterns for line in read_patterns(text)])
    assert rules.excluded(path) is expected
    assert rules.excluded(path, is_dir=True) is expected


def test_paths_are_cleaned() -> None:
    rules = IgnoreRules.parse("build")
    assert rules.excluded("./build/x") and rules.excluded("build/") and rules.excluded("/build")
    assert not rules.excluded("builder")


# -- walking a context ------------------------------------------------------------------------------


@pytest.fixture
def context(tmp_path: Path) -> Path:
    for rel in ["Dockerfile", "app/main.py", "app/cache/x.pyc", "build/out.bin",
                "build/keep.txt", "docs/a.md", "node_modules/pkg/index.js",
                "src/sub/deep/file.go"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    return tmp_path


@pytest.fixture
def scanned(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The directories the walk lists."""
    seen: list[str] = []
    real = os.scandir

    def spy(path: os.PathLike[str]) -> os._ScandirIterator[str]:  # type: ignore[type-arg]
        seen.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(dockerignore.os, "scandir", spy)
    return seen


def test_walk_applies_rules_and_prunes(context: Path, scanned: list[str]) -> None:
    (context / ".dockerignore").write_text("build\n!build/keep.txt\n**/*.pyc\nnode_modules\n")
    assert list(walk_context(context)) == [
        ".dockerignore", "Dockerfile", "app", "app/cache", "app/main.py", "build",
        "build/keep.txt", "docs", "docs/a.md", "src", "src/sub", "src/sub/deep",
        "src/sub/deep/file.go"]
    assert not any("node_modules" in path for path in scanned)  # pruned, never listed
    assert any(path.endswith("build") for path in scanned)       # an exception lies below


def test_walk_without_rules_sends_everything(context: Path) -> None:
    assert list(walk_context(context)) == [
        "Dockerfile", "app", "app/cache", "app/cache/x.pyc", "app/main.py", "build",
        "build/keep.txt", "build/out.bin", "docs", "docs/a.md", "node_modules",
        "node_modules/pkg", "node_modules/pkg/index.js", "src", "src/sub", "src/sub/deep",
        "src/sub/deep/file.go"]


def test_walk_prunes_when_no_exception_can_match_below(context: Path, scanned: list[str]) -> None:
    rules = IgnoreRules.parse("build\nsrc\n!docs/a.md\n")
    assert list(walk_context(context, rules)) == [
        "Dockerfile", "app", "app/cache", "app/cache/x.pyc", "app/main.py", "docs", "docs/a.md",
        "node_modules", "node_modules/pkg", "node_modules/pkg/index.js"]
    assert not any(path.endswith(("build", "src")) for path in scanned)


def test_walk_wildcard_exception_descends_and_sends_parents(context: Path) -> None:
    rules = IgnoreRules.parse("*\n!**/*.go\n")
    assert list(walk_context(context, rules)) == [
        "src", "src/sub", "src/sub/deep", "src/sub/deep/file.go"]


def test_walk_top_level_exception_does_not_reach_into_excluded_dirs(context: Path) -> None:
    # Docker's well-known gotcha: "*" excludes the directory src, "!*.go" names top-level files.
    assert list(walk_context(context, IgnoreRules.parse("*\n!*.go\n"))) == []


def test_walk_dockerfile_and_dockerignore_follow_the_rules(context: Path) -> None:
    (context / ".dockerignore").write_text("Dockerfile\n.dockerignore\n*\n!app\n")
    # The builder still reads both; walk_context reports what COPY/ADD may see.
    assert list(walk_context(context)) == [
        "app", "app/cache", "app/cache/x.pyc", "app/main.py"]


def test_walk_does_not_follow_symlinks(context: Path) -> None:
    (context / "link").symlink_to(context / "app", target_is_directory=True)
    paths = list(walk_context(context, IgnoreRules.parse("build\nsrc\nnode_modules\ndocs")))
    assert "link" in paths and not any(p.startswith("link/") for p in paths)


def test_dockerfile_specific_ignore_file_wins(context: Path) -> None:
    (context / ".dockerignore").write_text("docs\n")
    (context / "app.Dockerfile").write_text("FROM scratch\n")
    (context / "app.Dockerfile.dockerignore").write_text("app\n")
    rules = load(context, context / "app.Dockerfile")
    assert rules.excluded("app/main.py") and not rules.excluded("docs/a.md")
    assert load(context).excluded("docs/a.md")
    assert not load(context / "app").excluded("anything")  # no .dockerignore: nothing excluded


def test_bad_pattern_in_file_names_the_line(context: Path) -> None:
    (context / ".dockerignore").write_text("# comment\nok\n[oops\n")
    with pytest.raises(DockerfileError) as exc:
        load(context)
    assert str(exc.value).startswith(f"{context / '.dockerignore'}:3: bad pattern '[oops'")
