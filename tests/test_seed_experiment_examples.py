"""The experiment seed README's examples, run as written with only the import changed.

Each test works in its own temporary folder (the seed's default base folder and report folder are
relative), supplies tiny real inputs for the README's placeholders, and checks what the example prints.
"""

from __future__ import annotations

import hashlib
import html.parser
import re
from pathlib import Path

import matplotlib
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from runtel.tracking import ExperimentManager, ExperimentTracker, MetricVisualizer

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _run_two_experiments(manager: ExperimentManager) -> tuple[ExperimentTracker, ExperimentTracker]:
    exp1 = manager.create_experiment("experiment_1")
    exp2 = manager.create_experiment("experiment_2")
    for tracker, lr in ((exp1, 0.01), (exp2, 0.1)):
        tracker.log_hyperparameters({"learning_rate": lr, "batch_size": 32})
        for step in range(20):
            tracker.log_metrics({"train_loss": 1.0 / (step + 1) + lr, "accuracy": step / 20 - lr}, step=step)
        tracker.finish()
    return exp1, exp2


def test_quick_start(tmp_path: Path) -> None:
    Path("model.h5").write_bytes(b"weights")
    import matplotlib.pyplot as plt

    matplotlib_figure, axes = plt.subplots()
    axes.plot([0, 1, 2], [1.0, 0.5, 0.25])

    # --- README: Basic Usage ---
    tracker = ExperimentTracker(experiment_name="my_experiment", auto_visualize=True)
    tracker.log_hyperparameters({"learning_rate": 0.01, "batch_size": 32, "optimizer": "adam"})
    for epoch in range(100):
        train_loss, val_loss, accuracy = 1.0 / (epoch + 1), 1.2 / (epoch + 1), epoch / 100
        tracker.log_metrics(
            {"train_loss": train_loss, "val_loss": val_loss, "accuracy": accuracy}, step=epoch
        )
    tracker.log_artifact("model.h5")
    tracker.log_figure(matplotlib_figure, "training_curve.png")
    tracker.finish()
    # ---
    plt.close(matplotlib_figure)

    assert tracker.status == "completed"
    assert tracker.experiment_dir.parent == tmp_path / "runtel_runs"
    assert tracker.get_artifact_version("model.h5").size == len(b"weights")
    plots = tracker.experiment_dir / "plots"
    assert imread(plots / "training_curve_step99.png").ndim == 3
    for name in ("train_loss", "val_loss", "accuracy"):
        assert imread(plots / f"auto_metric_{name}.png").shape[0] > 100
    assert (plots / "auto_all_metrics_combined.png").is_file()
    assert tracker.get_metrics("accuracy")[-1]["value"] == 0.99


def test_artifact_versioning(capsys: pytest.CaptureFixture[str]) -> None:
    contents = [f"checkpoint {i}".encode() for i in range(5)]
    # --- README: Artifact Versioning ---
    tracker = ExperimentTracker(experiment_name="versioned_experiment")
    for checkpoint in range(5):
        Path("checkpoint.pt").write_bytes(contents[checkpoint])  # ... training ...
        tracker.log_model("checkpoint.pt", framework="pytorch", version=True)
    versions = tracker.list_artifact_versions("checkpoint.pt")
    for v in versions:
        print(f"Version {v.version}: {v.checksum}")
    latest = tracker.get_artifact_version("checkpoint.pt", version=-1)
    v2 = tracker.get_artifact_version("checkpoint.pt", version=2)
    # ---
    tracker.finish()
    expected = "".join(f"Version {i + 1}: {hashlib.sha256(c).hexdigest()}\n" for i, c in enumerate(contents))
    assert capsys.readouterr().out == expected
    assert Path(latest.path).read_bytes() == contents[4]
    assert Path(v2.path).read_bytes() == contents[1]
    assert v2.metadata["framework"] == "pytorch"


def test_experiment_comparison_with_the_manager() -> None:
    # --- README: Using ExperimentManager ---
    manager = ExperimentManager()
    exp1 = manager.create_experiment("experiment_1")
    exp2 = manager.create_experiment("experiment_2")
    for tracker in (exp1, exp2):  # ... run experiments ...
        for step in range(10):
            tracker.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        tracker.finish()
    plots = manager.compare_experiments([exp1.experiment_id, exp2.experiment_id])
    manager.export_comparison([exp1.experiment_id, exp2.experiment_id])
    # ---
    assert list(plots) == ["loss"]
    assert isinstance(plots["loss"], Figure)
    assert [line.get_label() for line in plots["loss"].axes[0].lines] == ["experiment_1", "experiment_2"]
    page = Path("comparison_report", "comparison.html").read_text(encoding="utf-8")
    parser = html.parser.HTMLParser()
    parser.feed(page)
    assert page.count("data:image/png;base64,") == 1
    assert Path("comparison_report", "comparison.csv").is_file()


def test_custom_visualizations() -> None:
    tracker = ExperimentTracker(experiment_name="custom", auto_visualize=False)
    for step in range(30):
        tracker.log_metrics({"loss": 1.0 / (step + 1), "accuracy": step / 30}, step=step)
    metrics_history = tracker.metrics_history
    # --- README: Custom Visualizations ---
    plots = MetricVisualizer.create_metric_plots(metrics_history, figsize=(15, 10))
    dist_plots = MetricVisualizer.create_distribution_plots(metrics_history)
    # ---
    tracker.finish()
    assert sorted(plots) == ["all_metrics_combined", "metric_accuracy", "metric_loss"]
    assert tuple(plots["all_metrics_combined"].get_size_inches()) == (15, 10)
    assert sorted(dist_plots) == ["all_metrics_correlation", "all_metrics_distributions"]
    assert list(plots["metric_loss"].axes[0].lines[0].get_ydata()) == [1.0 / (s + 1) for s in range(30)]


def test_manual_visualization_generation(capsys: pytest.CaptureFixture[str]) -> None:
    # --- README: Manual Visualization Generation ---
    tracker = ExperimentTracker(experiment_name="manual_viz", auto_visualize=False)
    for step in range(40):  # ... training ...
        tracker.log_metrics({"loss": 2.0 / (step + 1), "accuracy": step / 40})
    saved_plots = tracker.generate_visualizations()
    print(f"Generated plots: {list(saved_plots.keys())}")
    # ---
    tracker.finish()
    assert capsys.readouterr().out == (
        "Generated plots: ['metric_loss', 'metric_accuracy', 'all_metrics_combined', "
        "'all_metrics_distributions', 'all_metrics_correlation']\n"
    )
    assert all(imread(path).ndim == 3 for path in saved_plots.values())
    assert not list((tracker.experiment_dir / "plots").glob("auto_*"))


def test_experiment_queries(capsys: pytest.CaptureFixture[str]) -> None:
    experiment_id = _run_two_experiments(ExperimentManager())[1].experiment_id
    # --- README: Experiment Queries ---
    manager = ExperimentManager()
    experiments = manager.list_experiments()
    for exp in experiments:
        print(f"{exp['experiment_name']} - {exp['status']}")
    tracker = manager.get_experiment(experiment_id)
    best_acc, step = tracker.get_best_metric("accuracy", mode="max")
    print(f"Best accuracy: {best_acc} at step {step}")
    losses = tracker.get_metrics("train_loss")
    # ---
    out = capsys.readouterr().out
    assert out == (
        f"experiment_1 - completed\nexperiment_2 - completed\nBest accuracy: {19 / 20 - 0.1} at step 19\n"
    )
    assert [point["value"] for point in losses] == [1.0 / (s + 1) + 0.1 for s in range(20)]
    assert re.fullmatch(r"[0-9a-f]{32}", tracker.experiment_id)
