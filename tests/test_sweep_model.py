"""The sweep model without an engine: ``runtel.init(sweep=...)``, what a run folder keeps of it, and
``runtel.current_run()`` per thread."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

import runtel
from runtel.cli import main
from runtel.sweep import SweepRef, sweep_runs


def test_a_hand_made_sweep_is_read_back_with_its_trials(base_dir: Path) -> None:
    sweep = runtel.init(project="p", name="grid", base_dir=str(base_dir), sweep=SweepRef("grid"))
    ids = []
    for number, lr in enumerate([0.1, 0.01]):
        ref = SweepRef.trial_of(sweep, number)
        with runtel.init(project="p", base_dir=str(base_dir), config={"lr": lr}, sweep=ref) as trial:
            trial.log({"objective/loss": lr}, step=0)
            ids.append(trial.id)
    sweep.finish()
    found, trials = sweep_runs(runtel.Store(base_dir), "grid")
    assert found is not None and found.id == sweep.id
    assert found.metadata["sweep"] == {"id": sweep.id, "name": "grid", "role": "sweep"}
    assert [run.id for run in trials] == ids
    assert trials[1].metadata["sweep"] == {"id": sweep.id, "name": "grid", "role": "trial", "trial": 1}


def test_a_damaged_sweep_block_leaves_the_run_listed_outside_any_sweep(
    base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with runtel.init(project="p", name="member", base_dir=str(base_dir), sweep=SweepRef("s")) as run:
        pass
    path = run.dir / "metadata.json"
    for block in ({"id": 5, "name": "s", "role": "sweep"}, {"id": "x", "name": "s", "role": "boss"}, "s"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "sweep": block}))
        assert runtel.Store(base_dir).run(run.id).sweep is None
        assert runtel.Store(base_dir).runs(sweep="s") == []
        assert main(["ls", "--base-dir", str(base_dir), "--json"]) == 0
        assert [row["id"] for row in json.loads(capsys.readouterr().out)["runs"]] == [run.id]
    assert main(["ls", "--sweep", "s", "--base-dir", str(base_dir)]) == 1
    assert "no sweep 's'" in capsys.readouterr().err


def test_current_run_is_per_thread_inside_use_run(base_dir: Path) -> None:
    main_run = runtel.init(project="p", name="main", base_dir=str(base_dir))
    seen: dict[str, str | None] = {}

    def worker(name: str) -> None:
        with runtel.init(project="p", name=name, base_dir=str(base_dir)) as own, runtel.use_run(own):
            barrier.wait()
            current = runtel.current_run()
            seen[name] = current.name if current else None
            barrier.wait()

    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {"t0": "t0", "t1": "t1"}
    assert runtel.current_run() is main_run  # no use_run here: the latest open run
    main_run.finish()
    assert runtel.current_run() is None
