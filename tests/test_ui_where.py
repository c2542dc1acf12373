"""The runs table's filter box in a real Chromium: a filter expression, its syntax error, plain names."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import runtel
from runtel.store.query import Store
from runtel.ui import BackgroundServer, create_app, data
from tests.conftest import watched_tab


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ui-where") / "runs"
    for name, lr, tags in (
        ("alpha", 0.1, ["baseline"]),
        ("beta", 0.01, []),
        ("lr=0.5-s1", 0.5, ["baseline"]),
    ):
        with runtel.init(
            project="vision", name=name, base_dir=str(folder), config={"lr": lr}, tags=tags, system_interval=0
        ) as run:
            for step in range(3):
                run.log({"val/acc": lr * step}, step=step)
    return folder


@pytest.fixture(scope="module")
def ui(base: Path) -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = BackgroundServer(create_app(base))
    yield server.url
    server.close()


@pytest.fixture(scope="module")
def page(browser: Any, ui: str) -> Iterator[Any]:
    with watched_tab(browser, 1200) as tab:
        tab.goto(ui)
        tab.locator("#runs-table tbody tr").nth(2).wait_for(timeout=15_000)
        yield tab


def _type(page: Any, text: str) -> None:
    page.locator("#f-name").fill(text)
    page.locator("#f-name").press("Enter")


def _shown(page: Any, names: list[str]) -> None:
    """Wait until the table lists exactly ``names``, in order."""
    page.wait_for_function(
        "names => [...document.querySelectorAll('#runs-table tbody tr')]"
        ".map(row => row.children[1].innerText.split('\\n')[0]).join('|') == names.join('|')",
        arg=names,
        timeout=15_000,
    )


def test_an_expression_in_the_filter_box_filters_by_params_metrics_and_tags(page: Any) -> None:
    _type(page, "params.lr >= 0.1 and 'baseline' in tags")
    _shown(page, ["alpha", "lr=0.5-s1"])
    _type(page, "metrics['val/acc'].max < 0.1")
    _shown(page, ["beta"])
    assert page.locator("#filter-error").count() == 0


def test_a_syntax_error_is_shown_with_its_caret_and_lists_no_run(page: Any) -> None:
    _type(page, "params.lr <")
    page.locator("#filter-error").wait_for(timeout=15_000)
    assert page.locator("#filter-error").inner_text().splitlines() == [
        "invalid filter: the expression ends before it is complete at column 12:",
        "  params.lr <",
        "             ^",
    ]
    _shown(page, [])
    _type(page, "params.lr > 0.05 and nmae = 'x'")
    page.wait_for_function(
        "() => document.querySelector('#filter-error')?.innerText.includes(\"unknown field 'nmae'\")",
        timeout=15_000,
    )


def test_plain_names_still_filter_by_name(page: Any) -> None:
    _type(page, "alp")
    _shown(page, ["alpha"])
    _type(page, "lr=0.5")  # has '=', does not compile, but a run's name holds it
    _shown(page, ["lr=0.5-s1"])
    assert page.locator("#filter-error").count() == 0
    _type(page, "")
    _shown(page, ["alpha", "beta", "lr=0.5-s1"])


def test_filter_box_tells_expressions_from_names(base: Path) -> None:
    runs = Store(base).runs()
    assert data.filter_box(runs, "beta") == data.FilterBox(runs, "beta")
    box = data.filter_box(runs, "params.lr = 0.01")
    assert [run.name for run in box.runs] == ["beta"] and box.name == "" and box.error is None
    box = data.filter_box(runs, "'x' in nosuch")
    assert box.runs == [] and box.error is not None and "unknown field 'nosuch'" in box.error
