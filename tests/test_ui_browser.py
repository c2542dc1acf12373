"""The comparison UI in a real Chromium: selection, parameter diff, a spike in 1,000,000 points, broken
folders, live updates, the report download and the sweep view. One browser per session; one server per
module (the sweep view has its own store and server)."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import runtel
from runtel.ui import BackgroundServer, create_app
from runtel.ui.media_data import media_url
from tests.conftest import watched_tab

SPIKE_STEP, SPIKE_VALUE, POINTS = 654_321, 50.0, 1_000_000


def _training_run(base: Path, name: str, lr: float, tags: list[str]) -> str:
    with runtel.init(
        project="vision", name=name, base_dir=str(base), config={"lr": lr, "batch": 32}, tags=tags
    ) as run:
        for _ in run.epochs(3):
            for _ in range(20):
                run.log({"train/loss": 1 / (run.step + 2) + lr, "val/acc": 0.5 + 0.01 * run.step - lr})
            with run.span("validate"):
                pass
        weights = base.parent / f"{name}.bin"
        for version in range(2):
            weights.write_bytes(f"{name}-{version}".encode())
            run.log_artifact(str(weights), "model.bin")
        return run.id


def _crashed_run(base: Path) -> str:
    """A real training process killed with SIGKILL mid-run, its last series file then torn."""
    code = (
        "import os, signal, runtel\n"
        f"run = runtel.init(project='vision', name='crashed', base_dir={str(base)!r}, config={{'lr': 0.5}})\n"
        "for i in range(100): run.log({'train/loss': 1.0 / (i + 1)})\n"
        "run.flush()\nprint(run.id, flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    run_id = result.stdout.split()[0]
    series = base / f"crashed_{run_id[:8]}" / "metrics" / "points.bin"
    with series.open("ab") as handle:
        handle.write(b"\x01\x02\x03\x04\x05")  # half a record, as a crash mid-write leaves it
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("ui") / "runs"
    ids = {
        "alpha": _training_run(base, "alpha", 0.1, ["baseline"]),
        "beta": _training_run(base, "beta", 0.01, ["sweep"]),
    }
    with runtel.init(project="scale", name="big", base_dir=str(base), config={"lr": 0.001}) as run:
        values = np.sin(np.arange(POINTS) / 5000.0)
        values[SPIKE_STEP] = SPIKE_VALUE
        for step, value in enumerate(values.tolist()):
            run.log({"signal": value}, step=step)
        ids["big"] = run.id
    ids["crashed"] = _crashed_run(base)
    (base / "notes").mkdir()
    (base / "notes" / "readme.txt").write_text("not a run")
    (base / "half_written").mkdir()
    (base / "half_written" / "metadata.json").write_text('{"id": "0123')
    (base / "foreign").mkdir()  # another tool's folder: an id, but a name and project runtel never writes
    (base / "foreign" / "metadata.json").write_text('{"id": "abcdef0123456789", "name": 5, "project": ["x"]}')
    return {"base": base, "ids": ids}


@pytest.fixture(scope="module")
def ui(store: dict[str, Any]) -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = BackgroundServer(create_app(store["base"]))
    yield server.url
    server.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh tab that fails the test on any server error; a screenshot is kept in test-artifacts/."""
    with watched_tab(browser, 1800, screenshot=request.node.name) as tab:
        yield tab


def _served(page: Any, metric: str) -> list[dict[str, Any]]:
    """The traces the browser holds for ``metric``'s chart: name, x and y as served."""
    selector = f"#charts .dash-graph[id*='{metric}'] .js-plotly-plot"
    return page.evaluate(
        "s => document.querySelector(s)._fullData"
        ".map(t => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y)}))",
        selector,
    )


def _wait_for_trace(page: Any, metric: str) -> None:
    page.locator(f"#charts .dash-graph[id*='{metric}'] .scatterlayer .trace").first.wait_for(timeout=15_000)


def test_two_selected_runs_are_overlaid_in_a_metric_chart(page: Any, ui: str, store: dict[str, Any]) -> None:
    page.goto(ui)
    # The runs table renders above the Compare box and pushes it down: open the menu only once it is drawn.
    page.locator("#runs-table tr", has_text=store["ids"]["beta"][:8]).wait_for()
    page.locator("#selected").click()
    page.get_by_role("option").first.wait_for(timeout=5_000)
    for name in ("alpha", "beta"):
        page.get_by_role("option", name=f"{name} ({store['ids'][name][:8]}) · completed", exact=True).click()
    page.keyboard.press("Escape")
    _wait_for_trace(page, "val/acc")
    page.wait_for_function(
        "() => document.querySelector('#charts .dash-graph')?.querySelectorAll('.legendtext').length == 2"
    )
    legend = page.locator("#charts .dash-graph").first.locator(".legendtext").all_text_contents()
    assert legend == [f"alpha ({store['ids']['alpha'][:8]})", f"beta ({store['ids']['beta'][:8]})"]


def test_differing_hyperparameters_are_highlighted(page: Any, ui: str, store: dict[str, Any]) -> None:
    page.goto(f"{ui}?runs={store['ids']['alpha']},{store['ids']['beta']}")
    page.locator("#params tr.param-differs").first.wait_for()
    assert page.locator("#params tr.param-differs td:first-child").all_text_contents() == ["lr"]
    assert page.locator("#params tr:not(.param-differs) td:first-child").all_text_contents() == ["batch"]


def test_zooming_a_million_point_series_keeps_the_spike(page: Any, ui: str, store: dict[str, Any]) -> None:
    page.goto(f"{ui}?runs={store['ids']['big']}")
    _wait_for_trace(page, "signal")
    (whole,) = _served(page, "signal")
    assert len(whole["x"]) <= 3100 and SPIKE_VALUE in whole["y"]
    assert whole["x"][0] == 0 and whole["x"][-1] == POINTS - 1
    assert f"downsampled 1,000,000 → {len(whole['x']):,}" in whole["name"]

    page.evaluate(
        "s => Plotly.relayout(document.querySelector(s), {'xaxis.range': [600000, 700000]})",
        "#charts .dash-graph[id*='signal'] .js-plotly-plot",
    )
    page.wait_for_function(
        "s => document.querySelector(s)._fullData[0].x[1] >= 600000",
        arg="#charts .dash-graph[id*='signal'] .js-plotly-plot",
        timeout=15_000,
    )
    (zoomed,) = _served(page, "signal")
    inside = [x for x in zoomed["x"] if 600_000 <= x <= 700_000]
    assert len(zoomed["x"]) <= 3100 and len(inside) == len(zoomed["x"]) - 2  # plus one neighbour each side
    assert zoomed["y"][zoomed["x"].index(SPIKE_STEP)] == SPIKE_VALUE
    assert "downsampled 100,001 →" in zoomed["name"]


def test_broken_folders_are_marked_and_good_runs_listed(page: Any, ui: str, store: dict[str, Any]) -> None:
    page.goto(f"{ui}?runs={store['ids']['crashed']}")
    page.locator("#runs-table tbody tr").nth(3).wait_for()
    rows = page.locator("#runs-table tbody tr")
    names = [row.locator("td").nth(1).inner_text().splitlines()[0] for row in rows.all()]
    assert sorted(names) == ["alpha", "beta", "big", "crashed"]
    crashed = rows.filter(has_text="crashed").first
    assert crashed.locator(".status").inner_text() == "crashed"
    assert "torn record" in crashed.locator(".problem").inner_text()
    notes = page.locator("#notes").inner_text()
    assert "half_written/: metadata.json is not valid JSON" in notes and "notes/: not a run folder" in notes
    assert "foreign/: metadata.json field 'name' is an integer, not a string" in notes
    _wait_for_trace(page, "train/loss")
    (trace,) = _served(page, "train/loss")
    assert len(trace["x"]) == 100  # the whole records written before the kill, the torn tail ignored


def test_filtering_and_sorting_by_name_beside_a_foreign_folder(
    page: Any, ui: str, store: dict[str, Any]
) -> None:
    page.goto(ui)
    page.locator("#runs-table tbody tr").nth(3).wait_for()
    page.locator("#sort-key").click()
    page.get_by_role("option", name="sort: name", exact=True).click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#runs-table tbody tr')]"
        ".map(row => row.children[1].innerText.split('\\n')[0]).join() == 'alpha,beta,big,crashed'",
        timeout=15_000,
    )
    page.locator("#f-name").fill("Ig")  # not hex, so no id prefix matches it
    page.locator("#f-name").press("Enter")
    page.wait_for_function(
        "() => document.querySelectorAll('#runs-table tbody tr').length == 1", timeout=15_000
    )
    assert page.locator("#runs-table tbody tr td:nth-child(2)").inner_text().splitlines()[0] == "big"


def test_unknown_run_ids_in_the_url_are_ignored(page: Any, ui: str) -> None:
    page.goto(f"{ui}?runs=../../etc/passwd,deadbeefdeadbeef")
    page.locator("#runs-table tbody tr").first.wait_for()
    assert page.locator("#runs-table tr.selected").count() == 0
    page.locator("#cards", has_text="Select runs").wait_for()


def test_a_live_run_updates_without_restart(page: Any, browser: Any, tmp_path: Path) -> None:
    base = tmp_path / "live"
    server = BackgroundServer(create_app(base))
    run = runtel.init(project="live", name="training", base_dir=str(base))
    try:
        run.log({"loss": 1.0})
        run.flush()
        page.goto(f"{server.url}?runs={run.id}")
        _wait_for_trace(page, "loss")
        for step in range(1, 10):
            run.log({"loss": 1.0 / (step + 1)})
        run.flush()
        page.wait_for_function(
            "() => document.querySelector('#charts .js-plotly-plot')._fullData[0].x.length == 10",
            timeout=10_000,
        )
        assert page.locator("#cards .status").inner_text() == "running"
    finally:
        run.finish()
        server.close()


def test_an_unselected_live_run_row_updates_without_reload(page: Any, tmp_path: Path) -> None:
    base = tmp_path / "live"
    server = BackgroundServer(create_app(base))
    run = runtel.init(project="live", name="unselected", base_dir=str(base))
    try:
        run.log({"loss": 1.0})
        run.flush()
        # The page's first poll records what the store looked like; changes after it must show.
        with page.expect_response(lambda response: "..stamp.data" in (response.request.post_data or "")):
            page.goto(server.url)
        row = page.locator("#runs-table tbody tr", has_text=run.id[:8])
        row.wait_for()
        assert row.locator(".status").inner_text() == "running"
        assert row.locator("td").nth(7).inner_text() == "1"
        for step in range(1, 10):
            run.log({"loss": 1.0 / (step + 1)})
        run.finish()
        page.wait_for_function(
            "id => [...document.querySelectorAll('#runs-table tbody tr')].some(row =>"
            " row.innerText.includes(id) && row.querySelector('.status').innerText == 'completed'"
            " && row.children[7].innerText == '10')",
            arg=run.id[:8],
            timeout=20_000,
        )
        assert page.locator("#runs-table tr.selected").count() == 0
    finally:
        run.finish()
        server.close()


def test_the_console_tail_of_a_live_run_updates(page: Any, tmp_path: Path) -> None:
    base = tmp_path / "console"
    server = BackgroundServer(create_app(base))
    run = runtel.init(project="live", name="printing", base_dir=str(base), console=True)
    try:
        os.write(1, b"epoch 0: loss 1.0\n")
        page.goto(f"{server.url}?runs={run.id}")
        tail = page.locator("#console pre.console")
        tail.wait_for(timeout=15_000)
        assert tail.locator(".stdout").all_inner_texts() == ["epoch 0: loss 1.0"]
        os.write(1, b"epoch 1: loss 0.5\n")
        time.sleep(0.1)
        os.write(2, b"a warning\n")
        page.wait_for_function(
            "() => document.querySelectorAll('#console pre.console > div').length == 3", timeout=15_000
        )
        assert tail.locator("div").all_inner_texts() == [
            "epoch 0: loss 1.0",
            "epoch 1: loss 0.5",
            "[stderr] a warning",
        ]
        assert tail.locator(".stderr").all_inner_texts() == ["[stderr] a warning"]
    finally:
        run.finish()
        server.close()


def test_log_scale_toggle_switches_the_y_axis(page: Any, ui: str, store: dict[str, Any]) -> None:
    page.goto(f"{ui}?runs={store['ids']['alpha']}")
    _wait_for_trace(page, "train/loss")
    chart = "#charts .dash-graph[id*='train/loss'] .js-plotly-plot"
    assert page.evaluate("s => document.querySelector(s)._fullLayout.yaxis.type", chart) == "linear"
    page.locator("#y-log").get_by_text("log scale").click()
    page.wait_for_function(
        "s => document.querySelector(s)._fullLayout.yaxis.type == 'log'", arg=chart, timeout=15_000
    )


def test_exported_report_downloads_and_the_store_is_untouched(
    page: Any, ui: str, store: dict[str, Any]
) -> None:
    before = _tree(store["base"])
    page.goto(f"{ui}?runs={store['ids']['alpha']},{store['ids']['beta']}")
    _wait_for_trace(page, "val/acc")
    with page.expect_download(timeout=30_000) as download:
        page.locator("#export").click()
    html = Path(download.value.path()).read_text(encoding="utf-8")
    assert "alpha" in html and "beta" in html and "<img" in html
    assert _tree(store["base"]) == before


def _tree(base: Path) -> dict[str, str]:
    return {
        str(path.relative_to(base)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(base.rglob("*"))
        if path.is_file() and path.stat().st_size < 1 << 20
    } | {str(path): str(path.stat().st_size) for path in base.rglob("*.bin")}


# ---- the sweep view, over its own store and server

SWEEP_TRIALS = 12


@pytest.fixture(scope="module")
def study_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A recorded Optuna study of 12 trials, one failing, each logging a curve into its run."""
    import optuna

    from runtel.integrations.optuna import RuntelCallback

    base = tmp_path_factory.mktemp("ui-sweep") / "runs"
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        optimizer = trial.suggest_categorical("optimizer", ["adam", "sgd"])
        if trial.number == 4:
            raise ValueError("diverged")
        for step in range(5):
            value = lr * (step + 1) * (2 if optimizer == "adam" else 1)
            runtel.current_run().log({"val/loss": value}, step=step)  # type: ignore[union-attr]
            trial.report(value, step)
        return lr

    study = optuna.create_study(
        direction="minimize", study_name="ui-sweep", sampler=optuna.samplers.RandomSampler(seed=5)
    )
    with RuntelCallback(
        project="vision", metric_name="val/loss", base_dir=str(base), system_interval=0
    ) as cb:
        study.optimize(
            cb.track_in_runtel()(objective), n_trials=SWEEP_TRIALS, callbacks=[cb], catch=(ValueError,)
        )
    return base, study


@pytest.fixture(scope="module")
def sweep_ui(study_store: tuple[Path, Any]) -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = BackgroundServer(create_app(study_store[0]))
    yield server.url
    server.close()


def _plot(tab: Any, graph: str, script: str) -> Any:
    return tab.evaluate(f"s => {script}", f"#{graph} .js-plotly-plot")


def test_the_sweep_view_shows_every_trial(
    page: Any,
    sweep_ui: str,
    study_store: tuple[Path, Any],
) -> None:
    import optuna

    _, study = study_store
    page.goto(sweep_ui)
    page.locator("#sweep-rows tbody tr").nth(SWEEP_TRIALS - 1).wait_for(timeout=20_000)
    page.locator("#sweep-parcoords .parcoords").first.wait_for(timeout=15_000)
    dimensions = _plot(
        page,
        "sweep-parcoords",
        "document.querySelector(s).data[0].dimensions.map(d => ({label: d.label, n: d.values.length}))",
    )
    assert [d["label"] for d in dimensions] == ["lr", "optimizer", "state", "objective/val/loss"]
    assert {d["n"] for d in dimensions} == {SWEEP_TRIALS}
    lrs = _plot(page, "sweep-parcoords", "Array.from(document.querySelector(s).data[0].dimensions[0].values)")
    assert lrs == [t.params["lr"] for t in study.trials]

    first = page.locator("#sweep-rows tbody tr").first.locator("td").first.inner_text()
    assert int(first) == study.best_trial.number  # best (lowest) first
    page.get_by_label("by trial number").check()
    page.wait_for_function("() => document.querySelector('#sweep-rows tbody tr td').innerText == '0'")
    order = page.locator("#sweep-rows tbody tr td:first-child").all_text_contents()
    assert order == [str(n) for n in range(SWEEP_TRIALS)]

    running = _plot(page, "sweep-objective", "Array.from(document.querySelector(s).data[1].y)")
    completed = [t.values[0] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert running == [min(completed[: i + 1]) for i in range(len(completed))]

    page.locator("#sweep-curves .scatterlayer .trace").nth(2).wait_for(timeout=15_000)
    names = _plot(page, "sweep-curves", "document.querySelector(s).data.map(t => t.name)")
    assert len(names) == 3 and all("ui-sweep-trial-" in name for name in names)


# ---- the media section, over its own store and server: images, a table, a figure, histograms

MEDIA_STEPS = {"first": [0, 10, 20], "second": [4, 16]}
TABLE_ROWS = 45


def _matplotlib_figure(step: int) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2, 2))
    figure.add_subplot().plot([0, 1], [0, step])
    return figure


def _shade(run: str, step: int) -> int:
    """The grey level of ``run``'s image at ``step``: each image tells which it is."""
    return (step * 5 + (100 if run == "second" else 0)) % 256


@pytest.fixture(scope="module")
def media_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two runs logging ``samples`` images at different steps; the first also a table, a figure and
    histograms, all through the real API."""
    base = tmp_path_factory.mktemp("ui-media") / "runs"
    ids = {}
    for name, steps in MEDIA_STEPS.items():
        with runtel.init(project="vision", name=name, base_dir=str(base), system_interval=0) as run:
            for step in steps:
                pixels = np.full((6, 8, 3), _shade(name, step), dtype=np.uint8)
                run.log({"loss": 1.0, "samples": runtel.Image(pixels, caption=f"{name} {step}")}, step=step)
                if name == "first":
                    run.log_figure(_matplotlib_figure(step), "roc", step=step)
                    run.log_histogram("weights", np.arange(1000.0) + 100 * step, step=step, bins=20)
            if name == "first":
                rows = [[i, (i * 7) % TABLE_ROWS, f"row {i}"] for i in range(TABLE_ROWS)]
                run.log_table("eval", rows, columns=["i", "score", "label"], step=20)
            ids[name] = run.id
    return {"base": base, "ids": ids}


@pytest.fixture(scope="module")
def media_ui(media_store: dict[str, Any]) -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = BackgroundServer(create_app(media_store["base"]))
    yield server.url
    server.close()


def _open_media(page: Any, media_ui: str, media_store: dict[str, Any], key: str) -> Any:
    ids = media_store["ids"]
    page.goto(f"{media_ui}?runs={ids['first']},{ids['second']}")
    panel = page.locator(f".media-panel[data-key='{key}']")
    panel.wait_for(timeout=20_000)
    return panel


_SHOWN = """panel => [...panel.querySelectorAll('.media-run')].map(card => {
    const img = card.querySelector('img');
    let grey = null;
    if (img && img.complete && img.naturalWidth) {
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const context = canvas.getContext('2d');
        context.drawImage(img, 0, 0);
        grey = context.getImageData(0, 0, 1, 1).data[0];
    }
    return {run: card.dataset.run, step: card.dataset.step, heading: card.querySelector('h4').innerText,
            src: img && img.getAttribute('src'), grey: grey};
})"""


def _shown(panel: Any, steps: tuple[int, int]) -> list[dict[str, Any]]:
    """Each run's card once both show ``steps`` and their images are decoded: step, src, pixel value."""
    panel.page.wait_for_function(
        f"panel => {{ const shown = ({_SHOWN})(panel);"
        f" return shown.length == 2 && shown.every((card, i) => card.grey !== null"
        f" && card.step == {list(steps)}[i]); }}",
        arg=panel.element_handle(),
        timeout=15_000,
    )
    return panel.evaluate(_SHOWN)


def test_moving_the_slider_shows_each_runs_image_of_that_step(
    page: Any, media_ui: str, media_store: dict[str, Any]
) -> None:
    ids = media_store["ids"]
    stored = {name: runtel.Store(media_store["base"]).run(ids[name]) for name in ids}
    panel = _open_media(page, media_ui, media_store, "image:samples")
    # The union of both runs' steps is 0, 4, 10, 16, 20; each run shows its nearest (the earlier on a tie).
    for keys, wanted, steps in (
        ([], 20, (20, 16)),
        (["Home"], 0, (0, 4)),
        (["ArrowRight"], 4, (0, 4)),
        (["ArrowRight"], 10, (10, 4)),
        (["ArrowRight"], 16, (20, 16)),
    ):
        for key in keys:
            panel.get_by_role("slider").press(key)
        cards = _shown(panel, steps)
        assert panel.locator(".media-label").inner_text().startswith(f"step {wanted} ·")
        for card, name, step in zip(cards, ("first", "second"), steps, strict=True):
            item = dict(stored[name].media("samples"))[step]
            assert card["run"] == ids[name]
            assert card["src"] == media_url(ids[name], item.path.relative_to(stored[name].dir).as_posix())
            assert card["grey"] == _shade(name, step)  # the pixels the browser decoded
            assert card["heading"].endswith(f"step {step}" if step == wanted else f"(nearest to {wanted})")
    assert panel.locator("figcaption").all_text_contents() == [
        "first 20 · 6x8x3 uint8",
        "second 16 · 6x8x3 uint8",
    ]


def test_a_table_pages_and_sorts(page: Any, media_ui: str, media_store: dict[str, Any]) -> None:
    panel = _open_media(page, media_ui, media_store, "table:eval")
    grid = panel.locator(".media-run").first
    cells = (
        "(grid, column) => [...grid.querySelectorAll(`td[data-dash-column=${column}]`)].map(c => c.innerText)"
    )
    grid.locator("td[data-dash-column='c0']").first.wait_for(timeout=15_000)
    assert grid.evaluate(cells, "c0") == [str(i) for i in range(20)]
    grid.locator("button.next-page").click()
    page.wait_for_function(
        f"grid => ({cells})(grid, 'c0')[0] == '20'", arg=grid.element_handle(), timeout=15_000
    )
    assert grid.evaluate(cells, "c0") == [str(i) for i in range(20, 40)]
    assert grid.evaluate(cells, "c2") == [f"row {i}" for i in range(20, 40)]
    grid.locator("th[data-dash-column='c1'] .column-header--sort").click()
    page.wait_for_function(
        f"grid => ({cells})(grid, 'c1')[0] == '0'", arg=grid.element_handle(), timeout=15_000
    )
    scores = sorted((i * 7) % TABLE_ROWS for i in range(TABLE_ROWS))
    assert [int(score) for score in grid.evaluate(cells, "c1")] == scores[:20]  # a new sort starts at page 1
    assert (
        grid.locator(".current-page-shadow").inner_text() == "1"
        and grid.locator("button.previous-page").is_disabled()
    )


def test_a_histogram_over_steps_renders_as_distribution_and_heatmap(
    page: Any, media_ui: str, media_store: dict[str, Any]
) -> None:
    from runtel.ui import media_data

    panel = _open_media(page, media_ui, media_store, "histogram:weights")
    graph = panel.locator(".js-plotly-plot")
    graph.locator(".scatterlayer .trace").first.wait_for(timeout=15_000)
    traces = graph.evaluate(
        "g => g._fullData.map(t => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y)}))"
    )
    stored = runtel.Store(media_store["base"]).run(media_store["ids"]["first"])
    steps, bands = media_data.distribution(media_data.run_media(stored).histograms["weights"])
    median = next(trace for trace in traces if trace["name"] == "median")
    assert median["x"] == [0, 10, 20] == steps.tolist()
    assert median["y"] == pytest.approx(bands[:, 4].tolist())
    assert median["y"] == pytest.approx([499.5 + 100 * step for step in (0, 10, 20)], abs=1.0)
    assert len(traces) == 9  # four bands, each two edges, and the median
    page.get_by_label("heatmap").check()
    page.wait_for_function(  # the graph is drawn anew: look it up each time
        "s => document.querySelector(s)?._fullData?.[0]?.type == 'heatmap'",
        arg=".media-panel[data-key='histogram:weights'] .js-plotly-plot",
        timeout=15_000,
    )
    z = graph.evaluate("g => g._fullData[0].z.map(row => Array.from(row))")
    assert len(z) == 64 and all(len(row) == 3 for row in z)
    assert [sum(row[column] for row in z) for column in range(3)] == pytest.approx([1.0, 1.0, 1.0])


def test_a_logged_figure_is_shown_by_step(page: Any, media_ui: str, media_store: dict[str, Any]) -> None:
    run_id = media_store["ids"]["first"]
    panel = _open_media(page, media_ui, media_store, "figure:roc")
    image = panel.locator(f".media-run[data-run='{run_id}'] img")
    image.wait_for(timeout=15_000)
    assert image.get_attribute("src") == media_url(run_id, "plots/roc_step20.png")
    page.wait_for_function("img => img.complete && img.naturalWidth == 200", arg=image.element_handle())
    panel.get_by_role("slider").press("Home")
    page.wait_for_function(  # the card may be drawn anew: look it up each time
        "s => document.querySelector(s)?.getAttribute('src')?.endsWith('/plots/roc_step0.png')",
        arg=f".media-panel[data-key='figure:roc'] .media-run[data-run='{run_id}'] img",
        timeout=15_000,
    )
    assert (
        panel.locator(f".media-run[data-run='{media_store['ids']['second']}']")
        .inner_text()
        .endswith("not logged in this run")
    )


def test_a_slider_at_the_latest_step_follows_a_live_run_and_one_moved_back_stays(
    page: Any, tmp_path: Path
) -> None:
    base = tmp_path / "live-media"
    server = BackgroundServer(create_app(base))
    run = runtel.init(project="live", name="images", base_dir=str(base))
    card = f".media-panel[data-key='image:samples'] .media-run[data-run='{run.id}']"
    try:
        run.log_image("samples", np.zeros((4, 4), dtype=np.uint8), step=0)
        run.flush()
        page.goto(f"{server.url}?runs={run.id}")
        page.locator(f"{card}[data-step='0'] img").wait_for(timeout=20_000)
        run.log_image("samples", np.full((4, 4), 255, dtype=np.uint8), step=5)
        run.flush()
        page.locator(f"{card}[data-step='5'] img").wait_for(timeout=20_000)
        label = page.locator(".media-panel[data-key='image:samples'] .media-label")
        assert label.inner_text() == "step 5 · 2 of 2 logged steps"
        page.locator(".media-panel[data-key='image:samples']").get_by_role("slider").press("Home")
        page.locator(f"{card}[data-step='0'] img").wait_for(timeout=20_000)
        run.log_image("samples", np.full((4, 4), 9, dtype=np.uint8), step=9)
        run.flush()
        page.wait_for_function(
            "label => label.innerText == 'step 0 · 1 of 3 logged steps'",
            arg=label.element_handle(),
            timeout=20_000,
        )
        assert page.locator(card).get_attribute("data-step") == "0"
    finally:
        run.finish()
        server.close()


def test_a_missing_or_linked_out_media_file_is_named_not_drawn_broken(page: Any, tmp_path: Path) -> None:
    base = tmp_path / "damaged-media"
    with runtel.init(project="p", name="damaged", base_dir=str(base)) as run:
        run.log_image("gone", np.zeros((2, 2), dtype=np.uint8), step=1)
        run.log_image("linked", np.ones((2, 2), dtype=np.uint8), step=1)
    stored = runtel.Store(base).run(run.id)
    ((_, gone),) = stored.media("gone")
    ((_, linked),) = stored.media("linked")
    gone.path.unlink()
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(linked.path.read_bytes())
    linked.path.unlink()
    linked.path.symlink_to(outside)
    server = BackgroundServer(create_app(base))
    try:
        page.goto(f"{server.url}?runs={run.id}")
        problems = page.locator("#media .media-run .problem")
        problems.nth(1).wait_for(timeout=20_000)
        texts = problems.all_text_contents()
        assert (
            texts[0] == f"gone at step 1: {gone.path.relative_to(stored.dir)} is missing from the run folder"
        )
        assert texts[1].startswith("linked at step 1: events.jsonl field 'path'")
        assert "leads outside the run folder" in texts[1]
        assert page.locator("#media .media-run img").count() == 0
    finally:
        server.close()
