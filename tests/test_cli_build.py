"""``pydock build`` as users run it: Docker's classic output, -q, --iidfile, stdin, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import needs_root, pydock_cli


@pytest.fixture
def ctx(tmp_path: Path, busybox_image: str) -> Path:
    needs_root()
    path = tmp_path / "ctx"
    path.mkdir()
    (path / "hello.txt").write_text("hello\n")
    (path / "Dockerfile").write_text(
        "FROM busybox\nCOPY hello.txt /\nRUN echo step-output; cat /hello.txt > /copy\n"
        'CMD ["cat", "/copy"]\n')
    return path


def test_build_prints_steps_output_and_the_image(ctx: Path, tmp_path: Path) -> None:
    r = pydock_cli("build", "-t", "cli-built:1", str(ctx))
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr
    assert "Step 1/4 : FROM busybox" in out and "Step 3/4 : RUN echo step-output" in out
    assert "step-output\n" in out
    assert "Successfully built " in out and "Successfully tagged cli-built:1" in out
    again = pydock_cli("build", "-t", "cli-built:1", "--iidfile", str(tmp_path / "id"), str(ctx))
    assert again.stdout.decode().count(" ---> Using cache") == 3
    image_id = (tmp_path / "id").read_text()
    quiet = pydock_cli("build", "-q", str(ctx))
    assert quiet.stdout.decode().strip() == image_id
    run = pydock_cli("run", "--rm", "--network", "none", "cli-built:1")
    assert run.stdout == b"hello\n"


def test_build_from_stdin_and_with_build_args(ctx: Path) -> None:
    dockerfile = b"FROM busybox\nARG WHO\nRUN echo hi $WHO > /who\n"
    r = pydock_cli("build", "-q", "-f", "-", "--build-arg", "WHO=there", "-t", "stdin:1",
                   str(ctx), input=dockerfile)
    assert r.returncode == 0, r.stderr
    out = pydock_cli("run", "--rm", "--network", "none", "stdin:1", "cat", "/who")
    assert out.stdout == b"hi there\n"


def test_a_failing_step_names_the_line_and_exits_non_zero(ctx: Path) -> None:
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo about to fail; exit 3\n")
    r = pydock_cli("build", str(ctx))
    assert r.returncode == 1
    assert "about to fail" in r.stdout.decode()
    err = r.stderr.decode()
    assert "Dockerfile:2: RUN:" in err and "returned a non-zero code: 3" in err
    assert "Traceback" not in err
    quiet = pydock_cli("build", "-q", str(ctx))  # -q: the step's output goes to stderr
    assert quiet.returncode == 1 and "about to fail" in quiet.stderr.decode()


@pytest.mark.parametrize(("args", "message"), [
    (("/no/such/dir",), "unable to prepare context"),
    (("--build-arg", "=x", "."), "invalid --build-arg"),
])
def test_usage_errors(args: tuple[str, ...], message: str) -> None:
    r = pydock_cli("build", *args)
    assert r.returncode != 0 and message in r.stderr.decode()
    assert "Traceback" not in r.stderr.decode()
