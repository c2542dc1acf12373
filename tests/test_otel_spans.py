"""The run is an OpenTelemetry trace: epochs and phases are child spans, metrics carry span ids."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import runtel


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def test_run_span_is_parent_of_epoch_spans_and_trace_id_is_run_id(
    base_dir: Path, spans: InMemorySpanExporter
) -> None:
    with runtel.init(
        project="otel", name="traced", base_dir=str(base_dir), span_processors=[SimpleSpanProcessor(spans)]
    ) as run:
        for epoch in run.epochs(3):
            run.log({"loss": float(epoch)})
            with run.span("validate", dataset="val"):
                run.log({"val/acc": 0.5}, step=run.step)
    finished = spans.get_finished_spans()
    root = next(s for s in finished if s.parent is None)
    epochs = [s for s in finished if s.name.startswith("epoch")]
    validates = [s for s in finished if s.name == "validate"]
    assert format(root.context.trace_id, "032x") == run.id
    assert [s.attributes["epoch"] for s in epochs] == [0, 1, 2]
    assert all(s.parent.span_id == root.context.span_id for s in epochs)
    assert all(s.context.trace_id == root.context.trace_id for s in finished)
    assert [s.parent.span_id for s in validates] == [s.context.span_id for s in epochs]
    assert all(s.attributes["dataset"] == "val" for s in validates)

    stored = runtel.Store(base_dir).run(run.id)
    assert stored.span_ids("loss").tolist() == [s.context.span_id for s in epochs]
    assert stored.span_ids("val/acc").tolist() == [s.context.span_id for s in validates]
    assert (stored.spans()[0].name, stored.spans()[0].kind) == ("run traced", "run")


def test_params_are_attributes_of_the_run_span(base_dir: Path, spans: InMemorySpanExporter) -> None:
    with runtel.init(
        project="otel",
        base_dir=str(base_dir),
        config={"lr": 0.1, "model": {"depth": 4, "layers": [1, 2]}},
        span_processors=[SimpleSpanProcessor(spans)],
    ):
        pass
    root = spans.get_finished_spans()[-1]
    assert root.attributes["runtel.param.lr"] == 0.1
    assert root.attributes["runtel.param.model/depth"] == 4
    assert root.attributes["runtel.param.model/layers"] == "[1, 2]"


def test_traceparent_in_environment_joins_the_trace(
    base_dir: Path, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    monkeypatch.setenv("TRACEPARENT", f"00-{trace_id}-00f067aa0ba902b7-01")
    with runtel.init(
        project="otel", base_dir=str(base_dir), span_processors=[SimpleSpanProcessor(spans)]
    ) as run:
        pass
    assert run.id == trace_id
    root = spans.get_finished_spans()[-1]
    assert root.parent is not None and format(root.parent.span_id, "016x") == "00f067aa0ba902b7"


def test_logged_metrics_are_otel_gauges_for_attached_readers(base_dir: Path) -> None:
    reader = InMemoryMetricReader()
    with runtel.init(project="otel", base_dir=str(base_dir), metric_readers=[reader]) as run:
        run.log({"train/loss": 0.75, "weird name ü": 3.0})
        run.flush()
        data = reader.get_metrics_data()
    points = {
        (metric.name, point.attributes["runtel.metric"]): point.value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        if sm.scope.name == "runtel.metrics"
        for metric in sm.metrics
        for point in metric.data.data_points
    }
    assert points == {("train/loss", "train/loss"): 0.75, ("weird_name__", "weird name ü"): 3.0}
    resource = data.resource_metrics[0].resource.attributes
    assert resource["service.name"] == "otel"
    assert resource["runtel.run.name"] == run.name
    assert resource["runtel.run.id"] == run.id


def test_a_non_finite_latest_value_raises_the_nonfinite_gauge(base_dir: Path) -> None:
    reader = InMemoryMetricReader()
    with runtel.init(project="otel", base_dir=str(base_dir), metric_readers=[reader]) as run:
        run.log({"loss": float("nan")})
        run.flush()
        flagged = gauge_points(reader.get_metrics_data(), "runtel.nonfinite")
        run.log({"loss": 0.5})
        run.flush()
        cleared = gauge_points(reader.get_metrics_data(), "runtel.nonfinite")
    assert flagged == {"loss": 1} and cleared == {"loss": 0}


def test_user_instruments_are_not_mirrored_twice(base_dir: Path) -> None:
    reader = InMemoryMetricReader()
    with runtel.init(project="otel", base_dir=str(base_dir), metric_readers=[reader]) as run:
        run.meter.create_counter("samples").add(3)
        run.flush()
        run.flush()
        data = reader.get_metrics_data()
    mirrored = {
        m.name
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if sm.scope.name == "runtel.metrics"
    }
    assert "samples" not in mirrored


def gauge_points(data: object, name: str) -> dict[str, float]:
    return {
        point.attributes["runtel.metric"]: point.value
        for rm in data.resource_metrics  # type: ignore[attr-defined]
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for point in metric.data.data_points
    }


def test_joining_the_trace_of_a_run_stored_in_the_same_base_dir_is_refused(
    base_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two folders with one id would make the second unreachable through ``Store.run(id)``."""
    with runtel.init(project="otel", name="parent", base_dir=str(base_dir)) as parent:
        monkeypatch.setenv("TRACEPARENT", f"00-{parent.id}-00f067aa0ba902b7-01")
        with pytest.raises(runtel.ConfigError, match="another base_dir"):
            runtel.init(project="otel", name="child", base_dir=str(base_dir))
        with runtel.init(project="otel", name="child", base_dir=str(tmp_path / "child")) as child:
            pass
    assert child.id == parent.id
    assert [run.name for run in runtel.Store(base_dir).runs()] == ["parent"]


def traced(base_dir: Path, spans: InMemorySpanExporter) -> runtel.Run:
    return runtel.init(project="otel", base_dir=str(base_dir), span_processors=[SimpleSpanProcessor(spans)])


def by_name(spans: InMemorySpanExporter) -> dict[str, object]:
    return {s.name: s for s in spans.get_finished_spans()}


def test_break_out_of_epochs_ends_the_epoch_span_ok(base_dir: Path, spans: InMemorySpanExporter) -> None:
    with traced(base_dir, spans) as run:
        for epoch in run.epochs(10):
            run.log({"loss": 1.0})
            if epoch == 2:
                break  # early stopping
        with run.span("test"):
            run.log({"test/acc": 0.9})
    finished = by_name(spans)
    assert finished["epoch 2"].status.status_code.name == "UNSET"  # not an error
    assert "error.type" not in finished["epoch 2"].attributes
    assert finished["test"].parent.span_id == finished[f"run {run.name}"].context.span_id
    assert finished["epoch 2"].end_time <= finished["test"].start_time


class Diverged(Exception):
    pass


def test_an_exception_in_an_epoch_is_recorded_with_its_type(
    base_dir: Path, spans: InMemorySpanExporter
) -> None:
    with pytest.raises(Diverged), traced(base_dir, spans) as run:
        for _ in run.epochs(10):
            run.log({"loss": float("nan")})
            raise Diverged("loss is NaN")
    finished = by_name(spans)
    expected = f"{Diverged.__module__}.Diverged"
    assert finished["epoch 0"].status.status_code.name == "ERROR"
    assert finished["epoch 0"].attributes["error.type"] == expected
    assert finished[f"run {run.name}"].attributes["error.type"] == expected
    stored = runtel.Store(base_dir).run(run.id)
    epoch = next(s for s in stored.spans() if s.kind == "epoch")
    assert (epoch.status, epoch.attributes["error.type"]) == ("error", expected)


def test_an_exception_in_a_phase_span_is_recorded_with_its_type(
    base_dir: Path, spans: InMemorySpanExporter
) -> None:
    with traced(base_dir, spans) as run, pytest.raises(KeyError), run.span("validate"):
        raise KeyError("val/acc")
    validate = by_name(spans)["validate"]
    assert (validate.status.status_code.name, validate.attributes["error.type"]) == ("ERROR", "KeyError")


def test_epoch_step_ranges_start_at_their_first_step_and_never_overlap(
    base_dir: Path, spans: InMemorySpanExporter
) -> None:
    with traced(base_dir, spans) as run:
        for _ in run.epochs(3):
            for _ in range(94):
                run.log({"loss": 1.0})
    ranges = [
        (s.attributes["runtel.step_start"], s.attributes["runtel.step_end"])
        for s in spans.get_finished_spans()
        if s.name.startswith("epoch")
    ]
    assert ranges == [(0, 93), (94, 187), (188, 281)]


def test_resource_carries_the_git_revision_and_namespaced_rank(
    base_dir: Path, spans: InMemorySpanExporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], cwd=repo, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    monkeypatch.chdir(repo)
    with traced(base_dir, spans):
        pass
    resource = spans.get_finished_spans()[-1].resource.attributes
    assert resource["vcs.ref.head.revision"] == head
    assert (resource["runtel.rank"], resource["runtel.world_size"]) == (0, 1)
    assert "rank" not in resource
