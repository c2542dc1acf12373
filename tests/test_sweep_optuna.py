"""Optuna studies recorded as a sweep run and one run per trial, read back from the store and from MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

import runtel
from runtel.cli import main
from runtel.integrations.optuna import RuntelCallback
from runtel.sweep import sweep_runs
from tests.conftest import run_python

optuna.logging.set_verbosity(optuna.logging.WARNING)

_STATE = {
    optuna.trial.TrialState.COMPLETE: 0,
    optuna.trial.TrialState.PRUNED: 1,
    optuna.trial.TrialState.FAIL: 2,
}
_FAILING = 7


def _objective(trial: optuna.Trial) -> float:
    """Reports x + step; the pruner stops trials whose x is negative; trial 7 raises."""
    x = trial.suggest_float("x", -1.0, 1.0)
    layers = trial.suggest_int("layers", 1, 4)
    if trial.number == _FAILING:
        raise ValueError("trial 7 diverged")
    for step in range(4):
        value = x + step * 0.25
        runtel.current_run().log({"train/curve": value * layers}, step=step)  # type: ignore[union-attr]
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return x * layers


def _study(name: str, storage: str | None = None) -> optuna.Study:
    return optuna.create_study(
        direction="maximize",
        study_name=name,
        storage=storage,
        sampler=optuna.samplers.RandomSampler(seed=3),
        pruner=optuna.pruners.ThresholdPruner(lower=0.0),
        load_if_exists=True,
    )


@pytest.fixture
def recorded(base_dir: Path) -> optuna.Study:
    """A 20-trial study: several pruned, trial 7 failing (caught), every trial recorded."""
    study = _study("lr-sweep")
    with RuntelCallback(project="mnist", metric_name="val/acc", base_dir=str(base_dir)) as cb:
        study.optimize(cb.track_in_runtel()(_objective), n_trials=20, callbacks=[cb], catch=(ValueError,))
    return study


def test_every_trial_is_a_run_equal_to_study_trials(recorded: optuna.Study, base_dir: Path) -> None:
    sweep, trials = sweep_runs(runtel.Store(base_dir), "lr-sweep")
    states = [t.state for t in recorded.trials]
    assert 0 < states.count(optuna.trial.TrialState.PRUNED) < 19
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    assert sweep is not None and sweep.status == "completed" and sweep.name == "lr-sweep"
    assert [run.sweep.trial for run in trials if run.sweep] == list(range(20))
    for run, trial in zip(trials, recorded.trials, strict=True):
        assert run.sweep is not None and run.sweep.id == sweep.id and run.sweep.role == "trial"
        assert run.params() == trial.params
        assert run.status == ("failed" if trial.state == optuna.trial.TrialState.FAIL else "completed")
        steps, _, values = run.history("trial_state")
        assert values.tolist() == [_STATE[trial.state]]
        if trial.intermediate_values:
            steps, _, values = run.history("intermediate/val/acc")
            assert dict(zip(steps.tolist(), values.tolist(), strict=True)) == trial.intermediate_values
            assert run.history("train/curve")[0].tolist() == sorted(trial.intermediate_values)
        else:
            assert "intermediate/val/acc" not in run.metrics()
        if trial.values is not None:
            assert run.history("objective/val/acc")[2].tolist() == trial.values
        else:
            assert "objective/val/acc" not in run.metrics()
    failed = trials[_FAILING]
    assert "trial 7 diverged" in failed.summary()["error"]


def test_the_sweep_run_holds_the_objective_per_trial_and_the_best(
    recorded: optuna.Study, base_dir: Path
) -> None:
    sweep, _ = sweep_runs(runtel.Store(base_dir), "lr-sweep")
    assert sweep is not None
    steps, _, states = sweep.history("trial_state")
    assert steps.tolist() == list(range(20))
    assert states.tolist() == [_STATE[t.state] for t in recorded.trials]
    steps, _, values = sweep.history("objective/val/acc")
    with_values = [t for t in recorded.trials if t.values is not None]
    assert steps.tolist() == [t.number for t in with_values]
    assert values.tolist() == [t.values[0] for t in with_values]
    best_steps, _, best = sweep.history("best/val/acc")
    assert best[-1] == recorded.best_value
    assert sweep.history("best_trial")[2][-1] == recorded.best_trial.number
    completed = [t for t in recorded.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for step, value in zip(best_steps.tolist(), best.tolist(), strict=True):  # the running best
        assert value == max(t.values[0] for t in completed if t.number <= step)
    assert sweep.params()["sweep"]["directions"] == ["maximize"]


def test_mlflow_export_is_one_parent_with_20_children(
    recorded: optuna.Study, base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = [
        "export",
        "--sweep",
        "lr-sweep",
        "--to",
        "mlflow",
        "--tracking-uri",
        uri,
        "--base-dir",
        str(base_dir),
    ]
    assert main([*argv, "--json"]) == 0
    assert all(item["error"] is None for item in json.loads(capsys.readouterr().out)["runs"])
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("mnist")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert len(parents) == 1 and parents[0].info.run_name == "lr-sweep"
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 20
    by_number = {int(run.data.tags["runtel.sweep.trial"]): run for run in children}
    for trial in recorded.trials:
        child = by_number[trial.number]
        assert child.data.params == {key: str(value) for key, value in trial.params.items()}
        assert child.data.tags["runtel.sweep.name"] == "lr-sweep"
        if trial.values is not None:
            assert child.data.metrics["objective/val/acc"] == trial.values[0]
        history = client.get_metric_history(child.info.run_id, "intermediate/val/acc")
        assert {m.step: m.value for m in history} == trial.intermediate_values
    objective = client.get_metric_history(parents[0].info.run_id, "objective/val/acc")
    assert sorted(m.step for m in objective) == [t.number for t in recorded.trials if t.values is not None]


def test_store_and_cli_select_a_sweeps_trials_best_first(
    recorded: optuna.Study, base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    members = runtel.Store(base_dir).runs(sweep="lr-sweep")
    assert len(members) == 21
    by_id = runtel.Store(base_dir).runs(sweep=members[0].sweep.id)  # type: ignore[union-attr]
    assert [run.id for run in by_id] == [run.id for run in members]
    assert main(["ls", "--sweep", "lr-sweep", "--base-dir", str(base_dir), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["runs"]
    assert len(rows) == 20
    ranked = [
        t
        for state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        for t in sorted(recorded.get_trials(states=(state,)), key=lambda t: -t.values[0] if t.values else 0)
        if t.values is not None
    ]
    assert [row["trial"] for row in rows[: len(ranked)]] == [t.number for t in ranked]
    assert rows[0]["objective"] == recorded.best_value
    assert {row["state"] for row in rows} == {"completed", "pruned", "failed"}
    assert main(["show", "lr-sweep", "--base-dir", str(base_dir), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["run"]["name"] == "lr-sweep"
    assert shown["sweep"]["best_trial"] == recorded.best_trial.number
    assert shown["sweep"]["trials"] == 20


class _Spans(SpanProcessor):
    """Keeps every ended span of every run it is attached to."""

    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


def test_trial_root_spans_link_to_the_sweep_trace(base_dir: Path) -> None:
    spans = _Spans()
    study = _study("linked")
    with RuntelCallback(project="p", base_dir=str(base_dir), span_processors=[spans]) as cb:
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3, callbacks=[cb])
    sweep, trials = sweep_runs(runtel.Store(base_dir), "linked")
    assert sweep is not None
    sweep_root = next(s for s in spans.ended if s.name == "run linked")
    for run in trials:
        root = next(s for s in spans.ended if s.name == f"run {run.name}")
        assert f"{root.context.trace_id:032x}" == run.id != sweep.id
        (link,) = root.links
        assert f"{link.context.trace_id:032x}" == sweep.id
        assert link.context.span_id == sweep_root.context.span_id


def test_threads_each_log_into_their_own_trial(base_dir: Path) -> None:
    seen: dict[int, str] = {}
    lock = threading.Lock()

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        run = runtel.current_run()
        assert run is not None
        with lock:
            seen[trial.number] = run.id
        for step in range(20):
            run.log({"x": x, "thread": threading.get_ident() % 1000}, step=step)
        return x

    study = _study("threads")
    with RuntelCallback(project="p", base_dir=str(base_dir)) as cb:
        study.optimize(cb.track_in_runtel()(objective), n_trials=8, n_jobs=4, callbacks=[cb])
    sweep, trials = sweep_runs(runtel.Store(base_dir), "threads")
    assert sweep is not None and len(trials) == 8 and len(set(seen.values())) == 8
    for run in trials:
        assert run.sweep is not None and seen[run.sweep.trial] == run.id  # type: ignore[index]
        assert np.unique(run.history("x")[2]).tolist() == [run.params()["x"]]
    assert sorted(sweep.history("trial_state")[0].tolist()) == list(range(8))


def test_an_uncaught_failure_is_recorded_before_optimize_raises(base_dir: Path) -> None:
    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0.0, 1.0)
        trial.report(0.5, 0)
        if trial.number == 1:
            raise RuntimeError("out of memory")
        return 1.0

    study = _study("uncaught")
    with RuntelCallback(project="p", base_dir=str(base_dir)) as cb, pytest.raises(RuntimeError):
        study.optimize(cb.track_in_runtel()(objective), n_trials=5, callbacks=[cb])
    sweep, trials = sweep_runs(runtel.Store(base_dir), "uncaught")
    assert [run.status for run in trials] == ["completed", "failed"]
    assert "out of memory" in trials[1].summary()["error"]
    assert trials[1].history("intermediate/value")[2].tolist() == [0.5]
    assert sweep is not None and sweep.history("trial_state")[2].tolist() == [0, 2]


_CRASHING_SESSION = """
import os, optuna, runtel
from runtel.integrations.optuna import RuntelCallback
from runtel.run import active_runs
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(direction="minimize", study_name="resumed", storage={storage!r},
                            sampler=optuna.samplers.RandomSampler(seed={seed}), load_if_exists=True)
cb = RuntelCallback(project="p", base_dir={base_dir!r})
def objective(trial):
    x = trial.suggest_float("x", 0.0, 1.0)
    if {crash} and trial.number == 3:
        for run in active_runs():
            run.flush()  # what the background flush would have written by then
        os._exit(9)  # killed mid-trial: no finish, no exit hook
    return x
study.optimize(objective, n_trials=4, callbacks=[cb])
cb.finish()
"""


def test_a_study_resumed_after_a_crash_continues_the_same_sweep(base_dir: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    for seed, crash in ((1, True), (2, False)):
        code = _CRASHING_SESSION.format(storage=storage, seed=seed, base_dir=str(base_dir), crash=crash)
        if crash:
            _run_expecting_exit(code, tmp_path)
        else:
            run_python(code, tmp_path)
    study = optuna.load_study(study_name="resumed", storage=storage)
    sweeps = [
        run for run in runtel.Store(base_dir).runs(sweep="resumed") if run.sweep and run.sweep.role == "sweep"
    ]
    assert len(sweeps) == 1 and sweeps[0].status == "completed"
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    steps, _, values = sweeps[0].history("objective/value")
    assert steps.tolist() == [t.number for t in completed]
    assert values.tolist() == [t.values[0] for t in completed]
    assert sweeps[0].history("best/value")[2][-1] == study.best_value
    _, trials = sweep_runs(runtel.Store(base_dir), "resumed")
    assert [run.sweep.trial for run in trials if run.sweep] == [0, 1, 2, 4, 5, 6, 7]


def _run_expecting_exit(code: str, cwd: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 9, result.stderr
