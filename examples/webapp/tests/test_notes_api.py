"""The notes service's HTTP API, one fresh container per test: no test sees another's notes."""

from __future__ import annotations

import pytest


def test_health(api) -> None:
    assert api.call("GET", "/health") == (200, {"status": "ok"})


def test_starts_with_the_notes_baked_into_the_image(api) -> None:
    assert api.call("GET", "/notes") == (200, [{"id": 1, "text": "welcome"}])


@pytest.mark.parametrize("text", ["buy milk", "call Ada", "ünïcödé"])
def test_add_a_note(api, text: str) -> None:
    status, note = api.call("POST", "/notes", {"text": text})
    assert status == 201 and note == {"id": 2, "text": text}   # fresh container: id 2 again
    assert api.call("GET", "/notes")[1] == [{"id": 1, "text": "welcome"}, note]


def test_delete_a_note(api) -> None:
    assert api.call("DELETE", "/notes/1") == (204, None)
    assert api.call("GET", "/notes") == (200, [])
    assert api.call("DELETE", "/notes/1")[0] == 404


def test_bad_input_is_a_400(api) -> None:
    assert api.call("POST", "/notes", {"title": "no text"})[0] == 400


def test_the_log_shows_the_requests(app, api) -> None:
    api.call("GET", "/notes")
    assert app.wait_for_log(r"^GET /notes -> 200$") == "GET /notes -> 200"


def test_the_image_is_unchanged_by_a_test(pydock, app_image) -> None:
    with pydock.run(app_image, ["cat", "/data/notes.json"]) as c:
        assert c.wait(10) == 0
        assert c.logs().strip() == '[{"id": 1, "text": "welcome"}]'
