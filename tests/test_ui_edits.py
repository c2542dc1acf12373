"""The UI's edit panel (``allow_edits``) in a real Chromium, and what the edit route refuses: no token, a
foreign origin or host, a UI started read-only, a non-loopback address."""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import runtel
from runtel.cli import main
from runtel.errors import ConfigError
from runtel.ui import BackgroundServer, create_app
from runtel.ui.edits_view import EDIT_ROUTE, TOKEN_HEADER
from runtel.ui.server import make_server

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _stored_run(base: Path, name: str) -> str:
    with runtel.init(project="vision", name=name, base_dir=str(base), tags=["draft"]) as run:
        run.log({"loss": 0.5})
    return run.id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("ui-edits") / "runs"
    return {"base": base, "alpha": _stored_run(base, "alpha"), "beta": _stored_run(base, "beta")}


@pytest.fixture(scope="module")
def editable(store: dict[str, Any]) -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = BackgroundServer(create_app(store["base"], allow_edits=True))
    yield server.url
    server.close()


@pytest.fixture(scope="module")
def read_only(store: dict[str, Any]) -> Iterator[str]:
    server = BackgroundServer(create_app(store["base"]))
    yield server.url
    server.close()


def _post(url: str, body: object, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url.rstrip("/") + EDIT_ROUTE,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        return error.code, json.loads(body) if error.headers.get_content_type() == "application/json" else {}


def _token(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        page = response.read().decode()
    found = re.search(r'<meta name="runtel-edit-token" content="([^"]+)">', page)
    assert found is not None
    return found.group(1)


def test_a_tag_and_note_edited_in_the_browser_are_in_the_store(
    browser: Any, editable: str, store: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    try:
        page.goto(editable)
        page.locator("#edit-run").click()
        page.get_by_role("option", name=f"alpha ({store['alpha'][:8]})", exact=True).click()
        page.locator("#edit-name").wait_for()
        page.wait_for_function("document.getElementById('edit-name').value === 'alpha'")
        page.locator("#edit-tags").fill("+baseline -draft")
        page.locator("#edit-note").fill("best of the sweep")
        page.locator("#edit-apply").click()
        page.locator("#edit-status", has_text="saved: tags baseline").wait_for(timeout=10_000)
        run = runtel.Store(store["base"]).run(store["alpha"])
        assert (list(run.tags), run.note, run.name) == (["baseline"], "best of the sweep", "alpha")
        page.locator("#runs-table tr", has_text="alpha").locator("td", has_text="baseline").wait_for(
            timeout=10_000
        )  # the runs table follows the edit at its next poll
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"ui-{request.node.name}.png"), full_page=True)
        page.close()


def test_a_post_without_the_token_is_refused(editable: str, store: dict[str, Any]) -> None:
    status, answer = _post(editable, {"run": store["beta"], "add": ["planted"]}, {})
    assert status == 403 and TOKEN_HEADER in answer["error"]
    status, _ = _post(editable, {"run": store["beta"], "add": ["planted"]}, {TOKEN_HEADER: "guess"})
    assert status == 403
    assert list(runtel.Store(store["base"]).run(store["beta"]).tags) == ["draft"]


def test_a_cross_origin_post_is_refused_even_with_the_token(editable: str, store: dict[str, Any]) -> None:
    headers = {TOKEN_HEADER: _token(editable), "Origin": "http://evil.example"}
    status, answer = _post(editable, {"run": store["beta"], "add": ["planted"]}, headers)
    assert status == 403 and "cross-origin" in answer["error"]
    assert list(runtel.Store(store["base"]).run(store["beta"]).tags) == ["draft"]


def test_a_request_naming_another_host_is_refused(editable: str, store: dict[str, Any]) -> None:
    """A DNS rebinding page (evil.example resolved to 127.0.0.1) cannot load the page nor post."""
    port = editable.rstrip("/").rsplit(":", 1)[1]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(editable, headers={"Host": f"evil.example:{port}"}))
    assert refused.value.code == 403


def test_a_post_with_the_token_edits_and_bad_values_are_named(editable: str, store: dict[str, Any]) -> None:
    headers = {TOKEN_HEADER: _token(editable)}
    status, answer = _post(editable, {"run": store["beta"], "add": [""]}, headers)
    assert status == 400 and "tag name must not be empty" in answer["error"]
    status, answer = _post(editable, {"run": "../../etc", "add": ["x"]}, headers)
    assert status == 404
    status, answer = _post(editable, {"run": store["beta"], "add": ["kept"], "name": "beta-2"}, headers)
    assert status == 200 and answer["tags"] == ["draft", "kept"] and answer["name"] == "beta-2"
    assert runtel.Store(store["base"]).run("beta-2").id == store["beta"]


def test_a_read_only_ui_takes_no_edits(read_only: str, store: dict[str, Any]) -> None:
    with urllib.request.urlopen(read_only, timeout=10) as response:
        assert "runtel-edit-token" not in response.read().decode()
    status, _ = _post(read_only, {"run": store["alpha"], "add": ["planted"]}, {TOKEN_HEADER: "x"})
    assert status in (404, 405)
    assert "planted" not in runtel.Store(store["base"]).run(store["alpha"]).tags


def test_allow_edits_refuses_a_non_loopback_address(store: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        make_server(create_app(store["base"], allow_edits=True), "0.0.0.0", 0)


def test_cli_ui_allow_edits_refuses_a_non_loopback_host(
    store: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ui", "--allow-edits", "--host", "0.0.0.0", "--port", "0", "--base-dir", str(store["base"])]
    assert main(argv) == 1
    assert "loopback" in capsys.readouterr().err
