"""ExperimentTracker and ExperimentManager on real runs: lifecycle, read-back, artifacts, plots, reports."""

from __future__ import annotations

import csv
import hashlib
import html.parser
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from safetensors.torch import load_file

import runtel
from runtel.tracking import ExperimentManager, ExperimentTracker, RunStillRunningError

from .conftest import run_python


@pytest.fixture
def tracker(base_dir: Path) -> ExperimentTracker:
    return ExperimentTracker("exp", base_dir=base_dir, auto_visualize=False)


def _finished_experiment(
    manager: ExperimentManager, name: str, params: dict[str, object], losses: list[float]
) -> ExperimentTracker:
    tracker = manager.create_experiment(name, auto_visualize=False)
    tracker.log_hyperparameters(params)
    for step, loss in enumerate(losses):
        tracker.log_metrics({"loss": loss, "accuracy": 1.0 - loss}, step=step)
    tracker.finish()
    return tracker


class _Tables(html.parser.HTMLParser):
    """Tables of a page by id: rows of (cell text, cell class); plus the image sources."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str]]]] = {}
        self.row_classes: dict[str, list[str]] = {}
        self.images: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._cell_class = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table":
            self._table = found.get("id") or ""
            self.tables[self._table] = []
            self.row_classes[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
            self.row_classes[self._table].append(found.get("class") or "")
        elif tag in ("td", "th") and self._table is not None:
            self._cell, self._cell_class = [], found.get("class") or ""
        elif tag == "img":
            self.images.append(found.get("src") or "")

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append(("".join(self._cell), self._cell_class))
            self._cell = None
        elif tag == "table":
            self._table = None


# ---------------------------------------------------------------- lifecycle
def test_status_goes_from_created_to_running_to_completed(tracker: ExperimentTracker) -> None:
    assert tracker.status == "created"
    tracker.log_metrics({"loss": 1.0})
    assert tracker.status == "running"
    tracker.finish()
    tracker.finish()
    assert tracker.status == "completed"
    metadata = json.loads((tracker.experiment_dir / "metadata.json").read_text())
    assert (metadata["experiment_id"], metadata["status"]) == (tracker.experiment_id, "completed")


def test_an_exception_in_the_with_block_marks_the_experiment_failed(base_dir: Path) -> None:
    with (
        pytest.raises(ZeroDivisionError),
        ExperimentTracker("boom", base_dir=base_dir, auto_visualize=False) as tracker,
    ):
        tracker.log_metrics({"loss": 1.0})
        _ = 1 / 0
    assert tracker.status == "failed"
    assert "ZeroDivisionError" in runtel.Store(base_dir).run(tracker.experiment_id).summary()["error"]


def test_a_tracker_is_one_run(tracker: ExperimentTracker) -> None:
    assert tracker.run is not None
    assert tracker.run.id == tracker.experiment_id
    assert tracker.experiment_dir.name == f"exp_{tracker.experiment_id[:8]}"
    tracker.finish()
    assert len(runtel.Store(tracker.experiment_dir.parent).runs()) == 1


def test_unknown_backend_raises_config_error_and_creates_nothing(base_dir: Path) -> None:
    with pytest.raises(runtel.ConfigError, match="unknown exporter 'no-such-backend'"):
        ExperimentTracker("b", base_dir=base_dir, backend="no-such-backend")
    assert not base_dir.exists() or not any(base_dir.iterdir())


def test_a_bad_autoviz_period_names_the_variable(base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTEL_AUTOVIZ_EVERY", "zero")
    with pytest.raises(runtel.ConfigError, match="RUNTEL_AUTOVIZ_EVERY"):
        ExperimentTracker("x", base_dir=base_dir)


# ---------------------------------------------------------------- reading back
def test_get_metrics_reads_the_store_while_the_run_is_live(tracker: ExperimentTracker) -> None:
    tracker.log_metrics({"loss": 0.5, "acc": 0.1})
    tracker.log_metrics({"loss": 0.25}, step=10)
    tracker.log_metrics({"loss": 0.125})
    points = tracker.get_metrics("loss")
    assert [(p["step"], p["value"]) for p in points] == [(0, 0.5), (10, 0.25), (11, 0.125)]
    assert all(abs(p["timestamp"] - time.time()) < 60 for p in points)
    steps, times, values = tracker.get_metric_arrays("loss")
    assert steps.tolist() == [0, 10, 11]
    assert values.tolist() == [0.5, 0.25, 0.125]
    assert times.dtype == np.float64
    assert tracker.metrics_history["acc"] == [{"step": 0, "value": 0.1, "timestamp": times[0]}]
    tracker.finish()


def test_get_best_metric_skips_nan(tracker: ExperimentTracker) -> None:
    for step, value in enumerate([0.3, math.nan, 0.9, 0.1]):
        tracker.log_metrics({"score": value}, step=step)
    assert tracker.get_best_metric("score", mode="max") == (0.9, 2)
    assert tracker.get_best_metric("score", mode="min") == (0.1, 3)
    with pytest.raises(runtel.ConfigError, match="mode"):
        tracker.get_best_metric("score", mode="auto")  # type: ignore[arg-type]
    with pytest.raises(runtel.MetricNotFoundError, match="nope"):
        tracker.get_best_metric("nope")
    tracker.finish()


# ---------------------------------------------------------------- artifacts
def test_five_checkpoint_versions_are_checksummed_deduplicated_and_verified(
    tracker: ExperimentTracker, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "checkpoint.pt"
    contents = [b"epoch 0", b"epoch 1", b"epoch 2", b"epoch 2", b"epoch 4"]
    for content in contents:
        checkpoint.write_bytes(content)
        tracker.log_model(checkpoint, framework="pytorch")
    versions = tracker.list_artifact_versions("checkpoint.pt")
    assert [v.version for v in versions] == [1, 2, 3, 4, 5]
    assert [v.checksum for v in versions] == [hashlib.sha256(c).hexdigest() for c in contents]
    assert [v.size for v in versions] == [len(c) for c in contents]
    assert all(v.created_at and Path(v.path).is_file() for v in versions)
    assert os.path.samefile(versions[2].path, versions[3].path)  # same bytes stored once
    blobs = [
        p for p in (tracker.experiment_dir / "versions" / ".blobs").iterdir() if not p.name.startswith(".")
    ]
    assert len(blobs) == 4

    stored = Path(tracker.get_artifact_version("checkpoint.pt", version=2).path)
    stored.chmod(0o644)
    stored.write_bytes(b"tampered")
    with pytest.raises(runtel.ChecksumMismatchError, match="v2"):
        tracker.get_artifact_version("checkpoint.pt", version=2)
    assert tracker.get_artifact_version("checkpoint.pt").checksum == versions[4].checksum
    tracker.finish()


def test_path_traversal_names_are_rejected_and_nothing_is_written_outside(
    tracker: ExperimentTracker, tmp_path: Path
) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(b"w")

    def outside() -> list[Path]:
        return sorted(p for p in tmp_path.rglob("*") if tracker.experiment_dir not in (p, *p.parents))

    before = outside()
    for name in ("../escape.bin", "../../escape.bin", "/tmp/escape.bin", "a/../../escape.bin", "..\\x"):
        with pytest.raises(runtel.ArtifactError, match="unsafe artifact name"):
            tracker.log_artifact(source, name)
    with pytest.raises(runtel.ArtifactError, match="unsafe artifact name"):
        tracker.log_model(source, name="../model.bin")
    assert outside() == before
    tracker.finish()


def test_log_model_of_a_torch_module_stores_its_weights(tracker: ExperimentTracker) -> None:
    model = torch.nn.Linear(3, 2)
    stored = tracker.log_model(model, framework="pytorch")
    assert (stored.name, stored.kind, stored.metadata["format"]) == ("model", "model", "safetensors")
    assert torch.equal(load_file(stored.path)["weight"], model.weight.detach())
    tracker.finish()


# ---------------------------------------------------------------- the manager
def test_get_experiment_reopens_a_finished_run_read_only(base_dir: Path) -> None:
    manager = ExperimentManager(base_dir)
    done = _finished_experiment(manager, "done", {"lr": 0.1}, [0.5, 0.25])
    reopened = manager.get_experiment(done.experiment_id)
    assert (reopened.read_only, reopened.status, reopened.experiment_name) == (True, "completed", "done")
    assert reopened.get_best_metric("loss", mode="min") == (0.25, 1)
    with pytest.raises(runtel.RunFinishedError, match="read-only"):
        reopened.log_metrics({"loss": 0.1})
    with pytest.raises(runtel.RunFinishedError, match="read-only"):
        reopened.log_hyperparameters({"lr": 1})
    with pytest.raises(runtel.RunNotFoundError):
        manager.get_experiment("f" * 32)


def _crashed_experiment(base_dir: Path, cwd: Path) -> str:
    """An experiment whose process logged 5 losses and a checkpoint, then vanished without finishing."""
    run_python(
        "import os, time\n"
        "from runtel.tracking import ExperimentTracker\n"
        f"t = ExperimentTracker('crashy', base_dir={str(base_dir)!r}, auto_visualize=False)\n"
        "for s in range(5): t.log_metrics({'loss': 1.0 / (s + 1)})\n"
        "open('ckpt.pt', 'wb').write(b'epoch-4')\n"
        "t.log_model('ckpt.pt', framework='pytorch')\n"
        "assert len(t.get_metrics('loss')) == 5\n"
        "os._exit(0)\n",  # gone without finishing, as after kill -9 (exit 0: run_python checks the status)
        cwd=cwd,
    )
    [listed] = ExperimentManager(base_dir).list_experiments()
    assert (listed["experiment_name"], listed["status"]) == ("crashy", "crashed")
    return str(listed["experiment_id"])


def test_a_crashed_experiment_reopens_readable_and_unchanged_until_it_logs(
    base_dir: Path, tmp_path: Path
) -> None:
    experiment_id = _crashed_experiment(base_dir, tmp_path)
    manager = ExperimentManager(base_dir)
    reopened = manager.get_experiment(experiment_id)
    assert (reopened.status, reopened.read_only, reopened.run) == ("crashed", False, None)
    assert [p["value"] for p in reopened.get_metrics("loss")] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert reopened.get_best_metric("loss", mode="min") == (0.2, 4)
    reopened.finish()  # nothing was logged: nothing to end
    assert manager.get_experiment(experiment_id).status == "crashed"
    manager.delete_experiment(experiment_id)
    assert manager.list_experiments() == []


def test_a_crashed_experiment_resumes_on_its_first_log_call(base_dir: Path, tmp_path: Path) -> None:
    experiment_id = _crashed_experiment(base_dir, tmp_path)
    resumed = ExperimentManager(base_dir).get_experiment(experiment_id, auto_visualize=False)
    resumed.log_metrics({"loss": 0.1})
    assert (resumed.status, resumed.experiment_id) == ("running", experiment_id)
    assert resumed.run is not None and resumed.run.resumed
    (tmp_path / "ckpt.pt").write_bytes(b"epoch-5")
    resumed.log_model(tmp_path / "ckpt.pt", framework="pytorch")
    resumed.finish()

    reopened = ExperimentManager(base_dir).get_experiment(experiment_id)
    assert (reopened.status, reopened.read_only) == ("completed", True)
    assert [(p["step"], p["value"]) for p in reopened.get_metrics("loss")] == [
        (0, 1.0),
        (1, 0.5),
        (2, 1 / 3),
        (3, 0.25),
        (4, 0.2),
        (5, 0.1),
    ]
    versions = reopened.list_artifact_versions("ckpt.pt")
    assert [(v.version, Path(v.path).read_bytes()) for v in versions] == [(1, b"epoch-4"), (2, b"epoch-5")]
    with pytest.raises(runtel.RunFinishedError, match="read-only"):
        reopened.log_metrics({"loss": 0.0})


def test_list_experiments_and_delete_refuses_a_running_one(base_dir: Path) -> None:
    manager = ExperimentManager(base_dir)
    done = _finished_experiment(manager, "done", {}, [1.0])
    live = manager.create_experiment("live", auto_visualize=False)
    listed = manager.list_experiments()
    assert [(e["experiment_id"], e["experiment_name"], e["status"]) for e in listed] == [
        (done.experiment_id, "done", "completed"),
        (live.experiment_id, "live", "running"),
    ]
    assert all(e["created_at"] for e in listed)
    with pytest.raises(RunStillRunningError, match="still running"):
        manager.delete_experiment(live.experiment_id)
    live.finish()
    manager.delete_experiment(live.experiment_id)
    manager.delete_experiment(done.experiment_id)
    assert manager.list_experiments() == []
    assert not any(base_dir.iterdir())


def test_export_comparison_writes_html_csv_and_json_matching_the_store(
    base_dir: Path, tmp_path: Path
) -> None:
    manager = ExperimentManager(base_dir)
    a = _finished_experiment(manager, "a", {"lr": 0.1, "opt": {"name": "adam"}}, [0.9, 0.4, 0.5])
    b = _finished_experiment(manager, "b", {"lr": 0.2, "opt": {"name": "adam"}}, [0.8, 0.3, math.nan])
    page = manager.export_comparison([a.experiment_id, b.experiment_id], output_dir=tmp_path / "report")
    assert page == tmp_path / "report" / "comparison.html"

    parsed = _Tables()
    parsed.feed(page.read_text(encoding="utf-8"))
    assert set(parsed.tables) == {"experiments", "hyperparameters", "best-values"}
    params = {
        row[0][0]: (row, cls)
        for row, cls in zip(
            parsed.tables["hyperparameters"], parsed.row_classes["hyperparameters"], strict=True
        )
    }
    assert [cell for cell, _ in params["lr"][0]] == ["lr", "0.1", "0.2"] and params["lr"][1] == "differs"
    assert params["opt/name"][1] == ""
    best = {row[0][0]: row[1:] for row in parsed.tables["best-values"][1:]}
    assert best["loss"] == [("0.4 (step 1)", ""), ("0.3 (step 1)", "best")]
    assert len(parsed.images) == 2 and all(src.startswith("data:image/png;base64,") for src in parsed.images)

    store = runtel.Store(base_dir)
    with (tmp_path / "report" / "comparison.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    document = json.loads((tmp_path / "report" / "comparison.json").read_text())
    assert len(rows) == len(document["metrics"]) == 4
    for row, item in zip(rows, document["metrics"], strict=True):
        values = store.run(row["experiment_id"]).history(row["metric"])[2]
        assert float(row["max"]) == item["max"] == float(np.fmax.reduce(values))
        assert float(row["min"]) == item["min"] == float(np.fmin.reduce(values))
        assert int(row["count"]) == item["count"] == values.size
        assert row["last"] == repr(float(values[-1]))
    assert document["metrics"][2]["last"] is None  # b's last loss is NaN
    assert document["experiments"][1]["params"] == {"lr": 0.2, "opt": {"name": "adam"}}


# ---------------------------------------------------------------- automatic visualisation
def test_auto_visualization_renders_pngs_in_a_render_process(base_dir: Path) -> None:
    tracker = ExperimentTracker("auto", base_dir=base_dir, auto_visualize_every=10)
    for step in range(10):
        tracker.log_metrics({"loss": math.nan if step == 3 else 1.0 / (step + 1), "acc": step / 10.0})
    plots = tracker.experiment_dir / "plots"
    deadline = time.monotonic() + 10
    while not (plots / "auto_metric_loss.png").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (plots / "auto_metric_loss.png").exists()  # the periodic render, before finish
    tracker.log_metrics({"loss": 0.01, "acc": 1.0})
    tracker.finish()
    worker = tracker._autoviz
    assert worker is not None
    assert worker.failures == 0 and worker.renders >= 2
    assert worker.render_pids and os.getpid() not in worker.render_pids  # drawn in another process
    expected = {
        "auto_metric_loss.png",
        "auto_metric_acc.png",
        "auto_all_metrics_combined.png",
        "auto_all_metrics_distributions.png",
        "auto_all_metrics_correlation.png",
    }
    assert {p.name for p in plots.iterdir()} == expected
    for name in expected:
        image = imread(plots / name)
        assert image.ndim == 3 and image.shape[0] > 100


def test_a_failed_render_is_counted_and_a_dead_render_process_replaced(base_dir: Path) -> None:
    tracker = ExperimentTracker("fragile", base_dir=base_dir, auto_visualize_every=1_000_000)
    worker = tracker._autoviz
    assert worker is not None
    tracker.log_metrics({"loss": 1.0})
    plots = tracker.experiment_dir / "plots"
    plots.rmdir()
    plots.write_text("a file where the plots folder should be")
    worker._render(closing=False)
    assert (worker.failures, worker.renders) == (1, 0)

    plots.unlink()
    assert worker._process is not None
    first_pid = worker._process.pid
    worker._process.kill()
    worker._process.wait()
    tracker.log_metrics({"loss": 0.5})  # training goes on
    tracker.finish()
    assert (worker.failures, worker.renders) == (1, 1)
    assert worker.render_pids and first_pid not in worker.render_pids
    assert imread(plots / "auto_metric_loss.png").ndim == 3
    assert runtel.Store(base_dir).run(tracker.experiment_id).history("loss")[2].tolist() == [1.0, 0.5]


def test_a_million_point_run_with_a_spike_is_plotted(base_dir: Path) -> None:
    """How long finish() takes here is a figure of bench/bench_autoviz.py, not asserted."""
    values = np.sin(np.arange(1_000_000) / 5_000.0)
    values[654_321] = 99.0
    tracker = ExperimentTracker("big", base_dir=base_dir, auto_visualize_every=250_000)
    for value in values.tolist():
        tracker.log_metrics({"loss": value})
    tracker.finish()
    assert imread(tracker.experiment_dir / "plots" / "auto_metric_loss.png").ndim == 3
    saved = tracker.generate_visualizations()
    assert imread(saved["metric_loss"]).ndim == 3
    assert tracker.get_best_metric("loss") == (99.0, 654_321)
