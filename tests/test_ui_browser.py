"""The comparison UI in a real Chromium: selection, parameter diff, a spike in 1,000,000 points, broken
folders, live updates, the report download and the sweep view. One browser per session; one server per
module (the sweep view has its own store and server)."""

from __future__ import annotations

import hashlib
import logging
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright import sync_api as playwright_api

import runtel
from runtel.ui import BackgroundServer, create_app

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
SPIKE_STEP, SPIKE_VALUE, POINTS = 654_321, 50.0, 1_000_000
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


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


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        executable = shutil.which("chromium")
        assert executable, "needs Debian's chromium (bash .ci/test installs it)"
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def ui(store: dict[str, Any]) -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = BackgroundServer(create_app(store["base"]))
    yield server.url
    server.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh tab that fails the test on any server error; a screenshot is kept in test-artifacts/."""
    tab = browser.new_page(viewport={"width": 1400, "height": 1800})
    failures: list[str] = []
    tab.on("response", lambda response: failures.append(response.url) if response.status >= 500 else None)
    yield tab
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"ui-{request.node.name}.png"), full_page=True)
    tab.close()
    assert not failures, f"server errors: {failures}"


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
