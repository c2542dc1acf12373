"""Artifacts, models, figures and histograms logged through a run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import runtel
from runtel.records import ArtifactLogged, FigureLogged, HistogramLogged

matplotlib.use("Agg")


def test_log_artifact_versions_and_records_an_event(run: runtel.Run, tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint.pt"
    for epoch in range(3):
        checkpoint.write_bytes(f"weights of epoch {epoch}".encode())
        run.log({"loss": 1.0 / (epoch + 1)})
        stored = run.log_artifact(checkpoint)
        assert stored.version == epoch + 1
        assert stored.checksum == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    run.finish()
    events = [e for e in runtel.Store(run.dir.parent).run(run.id).events() if isinstance(e, ArtifactLogged)]
    assert [(e.name, e.version, e.step) for e in events] == [("checkpoint.pt", v, v - 1) for v in (1, 2, 3)]
    assert Path(events[1].path).read_bytes() == b"weights of epoch 1"


def test_unsafe_artifact_name_is_rejected_and_nothing_written(run: runtel.Run, tmp_path: Path) -> None:
    source = tmp_path / "x.bin"
    source.write_bytes(b"x")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for name in ("../x", "/etc/passwd", "a/../../b", "a\x00b"):
        with pytest.raises(runtel.ArtifactError, match="unsafe artifact name"):
            run.log_artifact(source, name)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_log_model_of_a_torch_module_saves_its_state_dict_with_safetensors(run: runtel.Run) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    first = run.log_model(model, "model.safetensors")
    with torch.no_grad():
        model[0].weight.add_(1.0)
    second = run.log_model(model, "model.safetensors")
    assert (first.version, second.version) == (1, 2)
    assert second.kind == "model"
    assert second.metadata["format"] == "safetensors"
    loaded = load_file(run.artifacts.get("model.safetensors", 2).path)
    assert torch.equal(loaded["0.weight"], model[0].weight.detach())
    assert not torch.equal(load_file(first.path)["0.weight"], loaded["0.weight"])


def test_log_model_of_a_path_records_the_framework(run: runtel.Run, tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"onnx bytes")
    stored = run.log_model(str(tmp_path / "model.onnx"), "model.onnx", framework="onnx")
    assert (stored.kind, stored.metadata["framework"]) == ("model", "onnx")


def test_log_figure_writes_a_png_per_step(run: runtel.Run) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.image import imread

    figure, axes = plt.subplots()
    axes.plot([0, 1, 2], [3, 1, 2])
    first = run.log_figure(figure, "training_curve.png", step=10)
    second = run.log_figure(figure, "training_curve.png", step=20)
    plt.close(figure)
    assert (first.name, second.name) == ("training_curve_step10.png", "training_curve_step20.png")
    assert imread(first).ndim == 3
    run.finish()
    events = [e for e in runtel.Store(run.dir.parent).run(run.id).events() if isinstance(e, FigureLogged)]
    assert [(e.name, e.step) for e in events] == [("training_curve.png", 10), ("training_curve.png", 20)]


def test_log_histogram_keeps_exact_moments_and_counts(run: runtel.Run) -> None:
    values = torch.randn(10_000, dtype=torch.float64)
    values[0] = float("nan")
    run.log_histogram("weights/fc1", values, step=3, bins=16)
    run.finish()
    (event,) = [
        e for e in runtel.Store(run.dir.parent).run(run.id).events() if isinstance(e, HistogramLogged)
    ]
    array = values.numpy()
    finite = array[np.isfinite(array)]
    counts, edges = np.histogram(finite, bins=16)
    assert event.step == 3 and event.count == 10_000
    assert event.counts.tolist() == counts.tolist()
    assert event.bin_edges.tolist() == edges.tolist()
    assert np.isnan(event.mean) and event.min != event.min  # NaN is data: the moments show it


def test_log_histogram_rejects_non_numbers(run: runtel.Run) -> None:
    with pytest.raises(runtel.InvalidMetricError, match="'h'"):
        run.log_histogram("h", ["a", "b"])
