"""A run killed mid-training resumes by id: the store's series is continuous and each backend holds
one run, read back with the backend's own reader."""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import runtel

from .readers.neptune_offline import offline_runs, read_run
from .readers.wandb_log import read_log

FIRST, SECOND = 1000, 500

PREEMPTED = textwrap.dedent(
    """
    import json, os, sys, time, runtel
    base_dir, exporter, options, steps = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
    run = runtel.init(project="resume", name="preempted", base_dir=base_dir,
                      exporters=[exporter], exporter_options={exporter: options})
    print(run.id, flush=True)
    for step in range(steps):
        run.log({"loss": 1000.0 - step})
    run.flush()
    time.sleep(3)  # the exporter's worker delivers the last batch meanwhile
    os.kill(os.getpid(), 9)
    """
)


def options(backend: str, tmp_path: Path) -> dict[str, Any]:
    return {
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"},
        "tensorboard": {"log_dir": str(tmp_path / "tb")},
        "wandb": {"mode": "offline", "dir": str(tmp_path / "wandb-root")},
        "neptune": {"mode": "offline", "data_directory": str(tmp_path / "neptune")},
    }[backend]


def expected_loss() -> list[float]:
    return [1000.0 - s for s in range(FIRST)] + [0.5] * SECOND


def mlflow_holds_one_continuous_run(tmp_path: Path, run_id: str) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (mlrun,) = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.tags["runtel.run_id"] == run_id
    history = sorted((m.step, m.value) for m in client.get_metric_history(mlrun.info.run_id, "loss"))
    assert history == list(enumerate(expected_loss()))


def tensorboard_holds_one_continuous_run(tmp_path: Path, run_id: str) -> None:
    (run_dir,) = (tmp_path / "tb").iterdir()
    assert run_dir.name == f"preempted_{run_id[:8]}"
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2  # one file per session
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    scalars = accumulator.Scalars("loss")
    assert [(e.step, e.value) for e in scalars] == list(enumerate(expected_loss()))


def wandb_holds_one_run_per_id(tmp_path: Path, run_id: str) -> None:
    """Both offline segments carry the runtel id (``wandb sync`` makes them one run). What wandb had
    not yet written when the process was killed is missing from the first; the local store has it."""
    pattern = str(tmp_path / "wandb-root" / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb")
    first, second = (read_log(path) for path in sorted(glob.glob(pattern)))
    assert first.run.run_id == second.run.run_id == run_id
    assert second.exit_code == 0 and sorted(second.history) == list(range(FIRST, FIRST + SECOND))
    assert all(row["loss"] == 0.5 for row in second.history.values())
    delivered = sorted(first.history)
    assert delivered == list(range(len(delivered))) and len(delivered) >= FIRST // 2
    assert [first.history[s]["loss"] for s in delivered] == expected_loss()[: len(delivered)]


def neptune_holds_the_run_id_in_each_session(tmp_path: Path, run_id: str) -> None:
    """Offline, Neptune writes each session as an offline run of its own (it ignores
    ``custom_run_id``, which a server uses to resume); both carry the runtel id and their parts."""
    runs = [read_run(directory) for directory in offline_runs(tmp_path / "neptune")]
    first, second = sorted(runs, key=lambda run: run.series["metrics/loss"][0][0])
    assert first.fields["runtel/run_id"] == second.fields["runtel/run_id"] == run_id
    assert [(p[0], p[1]) for p in second.series["metrics/loss"]] == [
        (s, 0.5) for s in range(FIRST, FIRST + SECOND)
    ]
    assert second.fields["runtel/status"] == "completed"
    delivered = [(p[0], p[1]) for p in first.series["metrics/loss"]]
    assert delivered == list(enumerate(expected_loss()))[: len(delivered)] and len(delivered) >= FIRST // 2


READ_BACK: dict[str, Callable[[Path, str], None]] = {
    "mlflow": mlflow_holds_one_continuous_run,
    "neptune": neptune_holds_the_run_id_in_each_session,
    "tensorboard": tensorboard_holds_one_continuous_run,
    "wandb": wandb_holds_one_run_per_id,
}


@pytest.mark.parametrize(
    "backend",
    [  # mlflow: 22 s measured
        pytest.param(name, marks=pytest.mark.slow) if name == "mlflow" else name for name in sorted(READ_BACK)
    ],
)
def test_a_killed_run_resumes_by_id_with_continuous_steps_and_one_backend_run(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    base_dir, exporter_options = tmp_path / "runs", options(backend, tmp_path)
    first = subprocess.run(
        [sys.executable, "-c", PREEMPTED, str(base_dir), backend, json.dumps(exporter_options), str(FIRST)],
        capture_output=True,
        text=True,
        # A preempted job takes its own wandb service down with it; this one must not share the test
        # process's service (WANDB_SERVICE, inherited), which would keep the killed run's id in use.
        env={key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"},
        timeout=120,
        check=False,
    )
    assert first.returncode == -signal.SIGKILL, first.stderr
    (run_id,) = re.findall(r"^[0-9a-f]{32}$", first.stdout, re.MULTILINE)  # neptune prints there too
    assert runtel.Store(base_dir).run(run_id).status == "crashed"

    with runtel.init(
        project="resume",
        base_dir=str(base_dir),
        resume=run_id,
        exporters=[backend],
        exporter_options={backend: exporter_options},
    ) as run:
        assert (run.id, run.resumed, run.step) == (run_id, True, FIRST - 1)
        for _ in range(SECOND):
            run.log({"loss": 0.5})

    stored = runtel.Store(base_dir).run(run_id)
    assert stored.status == "completed"
    steps, _, values = stored.history("loss")
    assert steps.tolist() == list(range(FIRST + SECOND))
    assert np.array_equal(values, expected_loss())
    assert len(stored.metadata["resumed_at"]) == 1
    assert stored.summary()["exporters"][backend]["status"] == "ok"
    READ_BACK[backend](tmp_path, run_id)


def test_resuming_a_live_or_unknown_run_is_refused(base_dir: Path) -> None:
    with (
        runtel.init(project="p", base_dir=str(base_dir)) as live,
        pytest.raises(runtel.ConfigError, match="live process"),
    ):
        runtel.init(project="p", base_dir=str(base_dir), resume=live.id)
    with pytest.raises(runtel.ConfigError, match="no such run"):
        runtel.init(project="p", base_dir=str(base_dir), resume="no-such-run")


def test_runtel_run_id_names_a_new_run_and_resumes_it_later(
    base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a job scheduler does: the same RUNTEL_RUN_ID for the first attempt and the requeued one."""
    run_id = "9f3c2a1b" * 4
    monkeypatch.setenv("RUNTEL_RUN_ID", run_id)
    with runtel.init(project="sched", name="job", base_dir=str(base_dir)) as first:
        for _ in range(3):
            first.log({"loss": 1.0})
    with runtel.init(project="sched", base_dir=str(base_dir)) as second:
        assert (second.id, second.resumed, second.name) == (run_id, True, "job")
        second.log({"loss": 0.5})
    stored = runtel.Store(base_dir).run(run_id)
    assert stored.history("loss")[0].tolist() == [0, 1, 2, 3]
    assert [run.id for run in runtel.Store(base_dir).runs()] == [run_id]
