"""A CLI image tested through exec, and the image-versus-container demonstration."""

from __future__ import annotations

import pytest


@pytest.fixture
def tools(pydock, tools_image):
    """A fresh container of the image for each test; its writable layer is discarded after."""
    with pydock.run(tools_image, ["sleep", "300"]) as c:
        yield c


def test_pipeline_of_tools(tools):
    result = tools.exec("printf 'b\\na\\nc\\n' | sort | tr a-z A-Z")
    assert result.exit_code == 0
    assert result.stdout == b"A\nB\nC\n"


def test_image_config_applies(tools):
    assert tools.exec("pwd; echo $LANG").stdout == b"/tmp\nC.UTF-8\n"


def test_files_in_and_out(tools):
    tools.put("/tmp/data.txt", "one\ntwo\n")
    assert tools.exec(["wc", "-l", "/tmp/data.txt"]).stdout.split()[0] == b"2"
    tools.exec("sha256sum /tmp/data.txt > /tmp/sum")
    assert tools.get("/tmp/sum").startswith(b"c3f9c8c283a2b1f2")


def test_a_missing_tool_is_exit_127(tools):
    result = tools.exec(["no-such-tool"])
    assert result.exit_code == 127
    assert b"executable file not found" in result.stderr


SERVE = ["httpd", "-f", "-p", "8080", "-h", "/www"]


def test_edit_in_a_container_never_reaches_the_image(pydock, tools_image):
    """The image is the blueprint; the container a disposable copy of it."""
    fetch = "wget -q -O - http://127.0.0.1:8080/index.html"
    with pydock.run(tools_image, SERVE, ready=pydock.http(8080, "/index.html")) as web:
        web.exec("echo edited > /www/index.html")
        assert web.exec(fetch).stdout == b"edited\n"
    # that container is gone, and with it its writable layer
    with pydock.run(tools_image, SERVE, ready=pydock.http(8080, "/index.html")) as web:
        assert web.exec(fetch).stdout == b"hello from the image\n"
