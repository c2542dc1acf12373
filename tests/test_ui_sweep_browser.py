"""The UI's sweep view in a real Chromium, over a recorded Optuna study (browser fixtures shared with
test_ui_browser)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

import runtel
from runtel.integrations.optuna import RuntelCallback
from runtel.ui import BackgroundServer, create_app
from tests.test_ui_browser import browser, page  # noqa: F401 (fixtures)

TRIALS = 12


@pytest.fixture(scope="module")
def study_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, optuna.Study]:
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
        study.optimize(cb.track_in_runtel()(objective), n_trials=TRIALS, callbacks=[cb], catch=(ValueError,))
    return base, study


@pytest.fixture(scope="module")
def sweep_ui(study_store: tuple[Path, optuna.Study]) -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = BackgroundServer(create_app(study_store[0]))
    yield server.url
    server.close()


def _plot(tab: Any, graph: str, script: str) -> Any:
    return tab.evaluate(f"s => {script}", f"#{graph} .js-plotly-plot")


def test_the_sweep_view_shows_every_trial(
    page: Any,  # noqa: F811
    sweep_ui: str,
    study_store: tuple[Path, optuna.Study],
) -> None:
    _, study = study_store
    page.goto(sweep_ui)
    page.locator("#sweep-rows tbody tr").nth(TRIALS - 1).wait_for(timeout=20_000)
    page.locator("#sweep-parcoords .parcoords").first.wait_for(timeout=15_000)
    dimensions = _plot(
        page,
        "sweep-parcoords",
        "document.querySelector(s).data[0].dimensions.map(d => ({label: d.label, n: d.values.length}))",
    )
    assert [d["label"] for d in dimensions] == ["lr", "optimizer", "state", "objective/val/loss"]
    assert {d["n"] for d in dimensions} == {TRIALS}
    lrs = _plot(page, "sweep-parcoords", "Array.from(document.querySelector(s).data[0].dimensions[0].values)")
    assert lrs == [t.params["lr"] for t in study.trials]

    first = page.locator("#sweep-rows tbody tr").first.locator("td").first.inner_text()
    assert int(first) == study.best_trial.number  # best (lowest) first
    page.get_by_label("by trial number").check()
    page.wait_for_function("() => document.querySelector('#sweep-rows tbody tr td').innerText == '0'")
    order = page.locator("#sweep-rows tbody tr td:first-child").all_text_contents()
    assert order == [str(n) for n in range(TRIALS)]

    running = _plot(page, "sweep-objective", "Array.from(document.querySelector(s).data[1].y)")
    completed = [t.values[0] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert running == [min(completed[: i + 1]) for i in range(len(completed))]

    page.locator("#sweep-curves .scatterlayer .trace").nth(2).wait_for(timeout=15_000)
    names = _plot(page, "sweep-curves", "document.querySelector(s).data.map(t => t.name)")
    assert len(names) == 3 and all("ui-sweep-trial-" in name for name in names)
