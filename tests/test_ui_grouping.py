"""The UI's group view in a real headless Chromium: choose a group-by field and a metric, read the band
and mean traces the browser holds and check them against numpy; switch to the min-max band; read the
parallel-coordinates dimensions."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import runtel
from runtel.ui import BackgroundServer, create_app
from runtel.ui.group_view import MAX_GRID_STEPS, grouped
from tests.conftest import watched_tab

STEPS = 20
#: lr -> seeds; each seed a run logging ``val/acc`` at steps 0..19 (seed 2 stops at step 9).
SEEDS = {0.1: (0, 1, 2), 0.01: (0, 1)}


def _value(lr: float, seed: int, step: int) -> float:
    return 0.5 + 0.02 * step - lr + 0.01 * seed * (step % 4)


def _steps(seed: int) -> range:
    return range(10) if seed == 2 else range(STEPS)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ui-groups") / "runs"
    for lr, seeds in SEEDS.items():
        for seed in seeds:
            config = {"lr": lr, "seed": seed, "batch": 32}
            with runtel.init(
                project="groups",
                name=f"lr{lr}-s{seed}",
                base_dir=str(folder),
                config=config,
                system_interval=0,
            ) as run:
                for step in _steps(seed):
                    run.log({"val/acc": _value(lr, seed, step), "train/loss": 1.0 / (step + 1)}, step=step)
    return folder


@pytest.fixture(scope="module")
def ui(base: Path) -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = BackgroundServer(create_app(base))
    yield server.url
    server.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    with watched_tab(browser, 2600, screenshot=request.node.name) as tab:
        yield tab


def _choose(page: Any, dropdown: str, option: str) -> None:
    page.locator(f"#{dropdown}").click()
    page.get_by_role("option", name=option, exact=True).click()
    page.keyboard.press("Escape")


def _traces(page: Any) -> dict[str, dict[str, list[float]]]:
    return {
        trace["name"]: trace
        for trace in page.evaluate(
            "() => document.querySelector('#group-chart .js-plotly-plot')._fullData"
            ".map(t => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y)}))"
        )
    }


def _expected(lr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sample std (NaN where one run) and n per step 0..19 over the seeds of ``lr``."""
    matrix = np.full((len(SEEDS[lr]), STEPS), np.nan)
    for row, seed in enumerate(SEEDS[lr]):
        for step in _steps(seed):
            matrix[row, step] = _value(lr, seed, step)
    n = (~np.isnan(matrix)).sum(axis=0)
    std = np.array(
        [np.std(col[~np.isnan(col)], ddof=1) if k > 1 else np.nan for col, k in zip(matrix.T, n, strict=True)]
    )
    return np.nanmean(matrix, axis=0), std, n


def _wait_for_traces(page: Any, count: int) -> None:
    page.wait_for_function(
        "n => document.querySelector('#group-chart .js-plotly-plot')?._fullData?.length == n",
        arg=count,
        timeout=15_000,
    )


def test_grouping_by_lr_draws_a_mean_line_and_std_band_per_group(page: Any, ui: str) -> None:
    page.goto(ui)
    page.locator("#runs-table tbody tr").nth(4).wait_for(timeout=15_000)
    _choose(page, "group-metric", "val/acc")
    _wait_for_traces(page, 2)  # no field chosen: one group of every run
    assert set(_traces(page)) == {"all runs (5 runs)", "all runs band"}
    _choose(page, "group-by", "params.lr")
    _wait_for_traces(page, 4)
    traces = _traces(page)
    assert set(traces) == {
        "params.lr=0.01 (2 runs)",
        "params.lr=0.01 band",
        "params.lr=0.1 (3 runs)",
        "params.lr=0.1 band",
    }
    for lr, runs in SEEDS.items():
        mean, std, _ = _expected(lr)
        line = traces[f"params.lr={lr} ({len(runs)} runs)"]
        assert line["x"] == list(range(STEPS))
        np.testing.assert_allclose(line["y"], mean, rtol=1e-12)
        band = traces[f"params.lr={lr} band"]
        upper, lower = mean + std, mean - std
        np.testing.assert_allclose(band["y"], [*upper, *lower[::-1]], rtol=1e-12)
        assert band["x"] == [*range(STEPS), *reversed(range(STEPS))]
    note = page.locator("#group-note").inner_text()
    assert note == "2 groups of 5 runs"


def test_the_min_max_band_spans_the_seeds(page: Any, ui: str) -> None:
    page.goto(ui)
    page.locator("#runs-table tbody tr").nth(4).wait_for(timeout=15_000)
    _choose(page, "group-metric", "val/acc")
    _choose(page, "group-by", "params.lr")
    _wait_for_traces(page, 4)
    page.get_by_label("min-max").check()
    page.wait_for_function(
        "() => document.querySelector('#group-chart .js-plotly-plot').layout.title.text.includes('min-max')",
        timeout=15_000,
    )
    band = _traces(page)["params.lr=0.1 band"]
    values = np.array(
        [
            [_value(0.1, seed, step) if step in _steps(seed) else np.nan for step in range(STEPS)]
            for seed in SEEDS[0.1]
        ]
    )
    upper, lower = np.nanmax(values, axis=0), np.nanmin(values, axis=0)
    np.testing.assert_allclose(band["y"], [*upper, *lower[::-1]], rtol=1e-12)


def test_parallel_coordinates_show_the_varying_params_and_the_best_value(page: Any, ui: str) -> None:
    page.goto(ui)
    page.locator("#runs-table tbody tr").nth(4).wait_for(timeout=15_000)
    _choose(page, "group-metric", "val/acc")
    page.locator("#group-parcoords .parcoords").first.wait_for(timeout=15_000)
    dimensions = page.evaluate(
        "() => document.querySelector('#group-parcoords .js-plotly-plot').data[0].dimensions"
        ".map(d => ({label: d.label, values: Array.from(d.values)}))"
    )
    assert [d["label"] for d in dimensions] == ["lr", "seed", "best val/acc"]
    runs = sorted(
        (lr, seed, max(_value(lr, seed, step) for step in _steps(seed)))
        for lr, seeds in SEEDS.items()
        for seed in seeds
    )
    shown = sorted(zip(*(d["values"] for d in dimensions), strict=True))
    assert shown == runs  # the stored values, exactly


def test_selected_runs_are_the_ones_grouped(page: Any, ui: str, base: Path) -> None:
    store = runtel.Store(base)
    chosen = [store.run("lr0.1-s0"), store.run("lr0.01-s1")]
    page.goto(f"{ui}?runs={','.join(run.id for run in chosen)}")
    page.locator("#best .js-plotly-plot").nth(1).wait_for(timeout=15_000)  # the page is drawn: no reflow
    _choose(page, "group-metric", "val/acc")
    _wait_for_traces(page, 2)
    assert page.locator("#group-note").inner_text() == "1 group of 2 runs"
    (line,) = [trace for name, trace in _traces(page).items() if not name.endswith("band")]
    expected = [(_value(0.1, 0, step) + _value(0.01, 1, step)) / 2 for step in range(STEPS)]
    np.testing.assert_allclose(line["y"], expected, rtol=1e-12)


def test_a_long_union_of_steps_is_resampled_for_the_browser(tmp_path: Path) -> None:
    for offset in (0, 1):  # even and odd steps: a union of 2 x 1,500 steps
        with runtel.init(
            name=f"r{offset}", base_dir=str(tmp_path), config={"lr": 0.1}, system_interval=0
        ) as run:
            for step in range(offset, 3000, 2):
                run.log({"val/acc": float(step)}, step=step)
    runs = runtel.Store(tmp_path).runs()
    (group,) = grouped(runs, "val/acc", ["params.lr"]).groups
    np.testing.assert_allclose(group.step, np.linspace(0, 2999, MAX_GRID_STEPS))
    np.testing.assert_allclose(group.mean, group.step, rtol=1e-12)  # both runs are the line y = step


def test_a_filter_expression_in_the_runs_box_limits_the_groups(page: Any, ui: str) -> None:
    page.goto(ui)
    page.locator("#runs-table tbody tr").nth(4).wait_for(timeout=15_000)
    page.locator("#f-name").fill("params.seed = 1")
    page.locator("#f-name").press("Enter")
    page.wait_for_function("() => document.querySelectorAll('#runs-table tbody tr').length == 2")
    _choose(page, "group-metric", "val/acc")
    _choose(page, "group-by", "params.lr")
    _wait_for_traces(page, 4)
    assert page.locator("#group-note").inner_text() == "2 groups of 2 runs"
    line = _traces(page)["params.lr=0.1 (1 run)"]
    np.testing.assert_allclose(line["y"], [_value(0.1, 1, step) for step in range(STEPS)], rtol=1e-12)
