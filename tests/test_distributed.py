"""Distributed jobs are one run (torchrun, gloo on CPU); a rank killed mid-run leaves it readable."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

import runtel
from tests import launch

TORCHRUN_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import torch
    import torch.distributed as dist
    import runtel

    base_dir, db, kill_rank = sys.argv[1], sys.argv[2], int(sys.argv[3])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    root = os.path.dirname(base_dir)
    run = runtel.init(
        project="ddp", name="ddp-job", base_dir=base_dir, system_interval=0.3,
        exporters=["mlflow", "tensorboard", "wandb"],
        exporter_options={
            "mlflow": {"tracking_uri": f"sqlite:///{db}"},
            "tensorboard": {"log_dir": os.path.join(root, "tb")},
            "wandb": {"mode": "offline", "dir": os.path.join(root, "wandb-root")},
        },
    )
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in run.epochs(2):
        for step in range(20):
            x = torch.randn(8, 4) + rank
            loss = model(x).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log({"loss": loss.item()})
            run.log({"rank_loss": loss.item()}, step=run.step, all_ranks=True)
            if rank == kill_rank and epoch == 1 and step == 5:
                run.flush()
                os.kill(os.getpid(), 9)
            time.sleep(0.02)
    run.finish()
    dist.destroy_process_group()
    """
)


def torchrun(tmp_path: Path, kill_rank: int = -1) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "train.py"
    script.write_text(TORCHRUN_SCRIPT)
    return launch.torchrun(script, str(tmp_path / "runs"), str(tmp_path / "mlflow.db"), str(kill_rank))


@pytest.mark.slow  # 61 s measured: torchrun, four backends
def test_two_ranks_are_one_run_in_the_store_and_in_each_backend(tmp_path: Path) -> None:
    result = torchrun(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = runtel.Store(tmp_path / "runs").runs()
    assert run.status == "completed"
    assert run.ranks() == {0: "completed", 1: "completed"}
    assert run.history("loss")[0].tolist() == list(range(40))
    assert "loss" not in run.metrics(rank=1)  # rank 0 logs by default ...
    for rank in (0, 1):  # ... every rank when asked, and every rank samples its own system
        assert run.history("rank_loss", rank=rank)[0].size == 40
        assert run.history("system/cpu.utilization", rank=rank)[0].size >= 2
    assert not np.array_equal(run.history("rank_loss", rank=0)[2], run.history("rank_loss", rank=1)[2])

    spans = run.spans()
    assert {s.trace_id for s in spans} == {run.id}
    root = next(s for s in spans if s.kind == "run" and s.parent_span_id is None)
    rank_root = next(s for s in spans if s.name == "rank 1")
    assert rank_root.parent_span_id == root.span_id
    epochs = [s for s in spans if s.kind == "epoch"]
    assert sorted(s.attributes["runtel.rank"] for s in epochs) == [0, 0, 1, 1]

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (mlrun,) = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert mlrun.data.tags["runtel.run_id"] == run.id
    assert len(client.get_metric_history(mlrun.info.run_id, "loss")) == 40
    (tb_run,) = (tmp_path / "tb").iterdir()
    assert tb_run.name == f"ddp-job_{run.id[:8]}" and len(list(tb_run.glob("events.out.tfevents.*"))) == 1
    wandb_runs = list((tmp_path / "wandb-root" / "wandb").glob("offline-run-*"))
    assert [path.name.rsplit("-", 1)[1] for path in wandb_runs] == [run.id]


@pytest.mark.slow  # 33 s measured: torchrun, a rank killed
def test_a_rank_killed_mid_run_leaves_the_run_readable_and_marked(tmp_path: Path) -> None:
    result = torchrun(tmp_path, kill_rank=1)
    assert result.returncode != 0
    (run,) = runtel.Store(tmp_path / "runs").runs()
    statuses = run.ranks()
    assert statuses[1] == "crashed"
    assert statuses[0] in ("failed", "killed", "crashed")  # its collectives fail, or torchrun stops it
    assert run.status == statuses[0]
    steps = run.history("rank_loss", rank=1)[0]
    assert steps.tolist() == list(range(steps.size)) and steps.size >= 26
