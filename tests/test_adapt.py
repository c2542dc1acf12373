"""The shared adaptation step: every change a backend forces is made in one place and reported."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtel._adapt import Adapter
from runtel.exporters.base import Capabilities, StepRule
from runtel.records import (
    ArtifactLogged,
    FigureLogged,
    HistogramLogged,
    MetricPoints,
    ParamsLogged,
    SpanEnded,
)


def points(names: tuple[str, ...], index: list[int], steps: list[int], values: list[float]) -> MetricPoints:
    n = len(index)
    return MetricPoints(
        names=names,
        index=np.asarray(index, dtype=np.int32),
        steps=np.asarray(steps, dtype=np.int64),
        times=np.arange(n, dtype=np.float64) + 1000.0,
        values=np.asarray(values, dtype=np.float64),
        span_ids=np.zeros(n, dtype=np.uint64),
    )


def adapt_one(adapter: Adapter, record: MetricPoints) -> MetricPoints:
    (out,) = adapter.adapt([record])
    assert isinstance(out, MetricPoints)
    return out


def test_backwards_segment_is_shifted_per_series_and_reported(tmp_path: Path) -> None:
    adapter = Adapter("neptune-like", Capabilities(step_rule="strictly_increasing"), tmp_path)
    out = adapt_one(adapter, points(("loss",), [0] * 6, [0, 1, 2, 1, 2, 3], [1, 2, 3, 4, 5, 6]))
    assert out.steps.tolist() == [0, 1, 2, 3, 4, 5]
    assert out.values.tolist() == [1, 2, 3, 4, 5, 6]
    later = adapt_one(adapter, points(("loss",), [0], [4], [7]))
    assert later.steps.tolist() == [6]  # the shift carries on: spacing is kept
    report = adapter.report()["step_shifted"]
    assert report["count"] == 4
    assert report["examples"][0] == {
        "metric": "loss",
        "step": 1,
        "sent_as": 3,
        "reason": "step went backwards",
    }


def test_run_wide_rule_allows_equal_steps_across_series_but_not_within_one(tmp_path: Path) -> None:
    caps = Capabilities(step_rule="strictly_increasing", run_step_rule="non_decreasing")
    adapter = Adapter("wandb-like", caps, tmp_path)
    names = ("train/loss", "val/acc")
    out = adapt_one(adapter, points(names, [0, 0, 1, 0, 1], [0, 1, 1, 0, 0], [1, 2, 3, 4, 5]))
    assert out.steps.tolist() == [0, 1, 1, 2, 2]
    assert adapter.report()["step_shifted"]["count"] == 2


def test_steps_already_fitting_are_untouched_and_nothing_is_reported(tmp_path: Path) -> None:
    caps = Capabilities(step_rule="strictly_increasing", run_step_rule="non_decreasing")
    adapter = Adapter("wandb-like", caps, tmp_path)
    record = points(("a", "b"), [0, 1, 0, 1], [0, 0, 1, 1], [1, 2, 3, 4])
    assert adapt_one(adapter, record).steps.tolist() == [0, 0, 1, 1]
    assert adapter.report() == {}


def test_non_finite_values_dropped_or_clamped_with_a_count(tmp_path: Path) -> None:
    record = points(("x",), [0, 0, 0, 0], [0, 1, 2, 3], [1.0, math.nan, math.inf, -math.inf])
    dropped = adapt_one(Adapter("n", Capabilities(non_finite_values="drop"), tmp_path), record)
    assert dropped.steps.tolist() == [0] and dropped.values.tolist() == [1.0]
    clamper = Adapter("m", Capabilities(non_finite_values="clamp"), tmp_path)
    clamped = adapt_one(clamper, record)
    big = np.finfo(np.float64).max
    assert clamped.values[2:].tolist() == [big, -big] and math.isnan(clamped.values[1])
    assert clamper.report()["infinity_clamped"]["count"] == 2


def test_float32_rounding_is_counted(tmp_path: Path) -> None:
    adapter = Adapter("tb", Capabilities(value_dtype="float32"), tmp_path)
    adapt_one(adapter, points(("x",), [0, 0, 0], [0, 1, 2], [0.5, 0.1, math.nan]))
    assert adapter.report()["value_rounded_to_float32"]["count"] == 1


def test_keys_that_break_the_backend_pattern_are_renamed(tmp_path: Path) -> None:
    caps = Capabilities(key_pattern=r"[\w.\- :]+(?:/[\w.\- :]+)*", max_key_length=20)
    adapter = Adapter("mlflow-like", caps, tmp_path)
    out = adapt_one(
        adapter, points(("ok/name", "bad*name", "/lead", "x" * 30), [0, 1, 2, 3], [0, 0, 0, 0], [1] * 4)
    )
    assert out.names[:3] == ("ok/name", "bad_name", "lead")
    assert len(out.names[3]) == 20
    assert adapter.report()["key_renamed"]["count"] == 3


def test_long_param_is_truncated_and_its_full_value_attached(tmp_path: Path) -> None:
    adapter = Adapter("mlflow-like", Capabilities(max_param_length=6000), tmp_path)
    long_value = "x" * 10_000
    params, artifact = adapter.adapt([ParamsLogged(params={"prompt": long_value, "lr": 0.1}, time=1.0)])
    assert isinstance(params, ParamsLogged) and isinstance(artifact, ArtifactLogged)
    assert params.params == {"prompt": "x" * 6000, "lr": 0.1}
    assert Path(artifact.path).read_text() == long_value
    assert adapter.report()["param_truncated"]["examples"][0]["length"] == 10_000


def test_params_of_unsupported_types_are_stringified_and_flattened(tmp_path: Path) -> None:
    caps = Capabilities(param_types=(bool, int, float, str), non_finite_params=False)
    adapter = Adapter("tb-like", caps, tmp_path)
    (params,) = adapter.adapt(
        [
            ParamsLogged(
                params={"layers": [64, 32], "none": None, "model": {"depth": 4}, "eps": math.inf}, time=0.0
            )
        ]
    )
    assert isinstance(params, ParamsLogged)
    assert params.params == {"layers": "[64, 32]", "none": "null", "model/depth": 4, "eps": "inf"}
    assert set(adapter.report()) == {"param_stringified", "params_flattened"}


def test_changed_value_of_a_write_once_param_gets_a_new_key(tmp_path: Path) -> None:
    adapter = Adapter("mlflow-like", Capabilities(params_immutable=True), tmp_path)
    first = adapter.adapt([ParamsLogged(params={"lr": 0.1}, time=0.0)])
    second = adapter.adapt([ParamsLogged(params={"lr": 0.01}, time=1.0)])
    same = adapter.adapt([ParamsLogged(params={"lr": 0.1}, time=2.0)])
    assert [r.params for r in (*first, *second, *same)] == [{"lr": 0.1}, {"lr.v2": 0.01}, {"lr": 0.1}]
    assert adapter.report()["param_changed"]["count"] == 1


def test_histogram_with_too_many_bins_is_merged_exactly(tmp_path: Path) -> None:
    counts, edges = np.histogram(np.random.default_rng(0).normal(size=10_000), bins=1000)
    record = HistogramLogged("w", 0, 0.0, edges, counts.astype(np.int64), -4.0, 4.0, 0.0, 1.0, 10_000)
    (out,) = Adapter("wandb-like", Capabilities(max_histogram_bins=512), tmp_path).adapt([record])
    assert isinstance(out, HistogramLogged)
    assert out.counts.size == 500 and out.counts.sum() == 10_000
    assert out.bin_edges.size == 501 and out.bin_edges[0] == edges[0] and out.bin_edges[-1] == edges[-1]


def _histogram(step: int) -> HistogramLogged:
    return HistogramLogged(
        name="weights",
        step=step,
        time=0.0,
        bin_edges=np.array([0.0, 1.0]),
        counts=np.array([3], dtype=np.int64),
        min=0.0,
        max=1.0,
        mean=0.5,
        std=0.1,
        count=3,
    )


def _epoch(step_end: int) -> SpanEnded:
    return SpanEnded(
        name="epoch 0",
        kind="epoch",
        trace_id="0" * 32,
        span_id="1" * 16,
        parent_span_id=None,
        start_time=0.0,
        end_time=1.0,
        attributes={"epoch": 0, "runtel.step_start": 0, "runtel.step_end": step_end},
    )


def test_epochs_figures_and_histograms_follow_a_shifted_segment(tmp_path: Path) -> None:
    """After steps 0..9 were re-logged as 10..19, an epoch, a figure and a histogram at step 9 of the
    second segment land at 19 with the metrics (W&B would otherwise drop them as lower steps)."""
    caps = Capabilities(step_rule="strictly_increasing", run_step_rule="non_decreasing")
    adapter = Adapter("wandb-like", caps, tmp_path)
    adapter.adapt([points(("loss",), [0] * 10, list(range(10)), [1.0] * 10)])
    shifted = adapt_one(adapter, points(("loss",), [0] * 10, list(range(10)), [2.0] * 10))
    assert shifted.steps.tolist() == list(range(10, 20))
    figure_at_9 = FigureLogged("curve", "c.png", 9, 0.0)
    epoch, figure, histogram = adapter.adapt([_epoch(9), figure_at_9, _histogram(9)])
    assert isinstance(epoch, SpanEnded) and epoch.attributes["runtel.step_end"] == 19
    assert isinstance(figure, FigureLogged) and figure.step == 19
    assert isinstance(histogram, HistogramLogged) and histogram.step == 19
    assert adapter.report()["step_shifted"]["count"] == 13


def test_a_second_histogram_at_the_same_step_is_moved_for_a_strict_backend(tmp_path: Path) -> None:
    adapter = Adapter("tensorboard-like", Capabilities(step_rule="strictly_increasing"), tmp_path)
    first, second = adapter.adapt([_histogram(5), _histogram(5)])
    assert (first.step, second.step) == (5, 6)  # type: ignore[union-attr]
    assert adapter.report()["step_moved"]["examples"] == [
        {"metric": "histograms/weights", "step": 5, "sent_as": 6, "reason": "two points at one step"}
    ]


def test_stepless_figures_and_any_step_backends_are_untouched(tmp_path: Path) -> None:
    adapter = Adapter("mlflow-like", Capabilities(), tmp_path)
    records = [_epoch(3), _epoch(3), FigureLogged("f", "f.png", None, 0.0), _histogram(1), _histogram(1)]
    assert adapter.adapt(records) == records
    assert adapter.report() == {}


def _scalar_reference(
    caps: Capabilities, batches: list[MetricPoints]
) -> tuple[list[list[int]], dict[str, int]]:
    """The step rules applied one point at a time, in logging order: what the batch path must match."""
    from runtel._adapt import Report
    from runtel._adapt_steps import StepFitter

    report = Report("reference")
    fitter = StepFitter(caps, report)
    sent = [
        [fitter.fit_one(b.names[i], s) for i, s in zip(b.index.tolist(), b.steps.tolist(), strict=True)]
        for b in batches
    ]
    return sent, {kind: entry["count"] for kind, entry in report.as_dict().items()}


@given(
    batches=st.lists(
        st.lists(st.tuples(st.integers(0, 2), st.integers(0, 12)), min_size=1, max_size=25),
        min_size=1,
        max_size=4,
    ),
    rules=st.sampled_from(
        [("strictly_increasing", "any"), ("non_decreasing", "any"), ("strictly_increasing", "non_decreasing")]
    ),
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_batch_step_rules_match_the_point_by_point_rule(
    tmp_path: Path, batches: list[list[tuple[int, int]]], rules: tuple[StepRule, StepRule]
) -> None:
    caps = Capabilities(step_rule=rules[0], run_step_rule=rules[1])
    records = [
        points(("a", "b", "c"), [i for i, _ in batch], [s for _, s in batch], [1.0] * len(batch))
        for batch in batches
    ]
    expected, counts = _scalar_reference(caps, records)
    adapter = Adapter("x", caps, tmp_path)
    got = [adapt_one(adapter, record).steps.tolist() for record in records]
    assert got == expected
    assert {kind: entry["count"] for kind, entry in adapter.report().items()} == counts


def test_two_system_samples_at_one_step_move_only_the_second(tmp_path: Path) -> None:
    """A system metric sampled twice during a long step: the repeat moves to the next free step, is
    reported as such, and the samples after it keep their own steps (no lasting shift)."""
    adapter = Adapter("tensorboard-like", Capabilities(step_rule="strictly_increasing"), tmp_path)
    steps = [0, 0, 10, 20, 20, 30, 40]
    out = adapt_one(adapter, points(("system/cpu.utilization",), [0] * 7, steps, [50.0] * 7))
    assert out.steps.tolist() == [0, 1, 10, 20, 21, 30, 40]
    report = adapter.report()
    assert set(report) == {"step_moved"} and report["step_moved"]["count"] == 2
    assert report["step_moved"]["examples"][0] == {
        "metric": "system/cpu.utilization",
        "step": 0,
        "sent_as": 1,
        "reason": "two points at one step",
    }


def test_repeated_steps_are_kept_for_a_backend_that_allows_them(tmp_path: Path) -> None:
    adapter = Adapter("mlflow-like", Capabilities(step_rule="any"), tmp_path)
    record = points(("system/cpu.utilization",), [0] * 4, [0, 0, 10, 10], [50.0] * 4)
    assert adapt_one(adapter, record) is record
    assert adapter.report() == {}


def test_a_clean_batch_is_returned_as_the_same_object(tmp_path: Path) -> None:
    caps = Capabilities(
        step_rule="strictly_increasing",
        run_step_rule="non_decreasing",
        time_rule="non_decreasing",
        value_dtype="float32",
        non_finite_values="drop",
        key_pattern=r"[\w/]+",
    )
    adapter = Adapter("strict", caps, tmp_path)
    first = points(("a", "b/c"), [0, 1, 0, 1], [0, 0, 1, 1], [0.5, 1.0, 2.0, 4.0])
    second = dataclasses.replace(
        points(("a", "b/c"), [0, 1], [2, 2], [8.0, 16.0]), times=np.array([1e4, 1e4])
    )
    assert adapt_one(adapter, first) is first
    assert adapt_one(adapter, second) is second
    assert adapter.report() == {}


def test_a_user_metric_in_the_exporters_namespace_is_renamed(tmp_path: Path) -> None:
    adapter = Adapter("any", Capabilities(), tmp_path)
    out = adapt_one(adapter, points(("runtel/epoch", "epoch"), [0, 1], [0, 0], [1.0, 2.0]))
    assert out.names == ("user/runtel/epoch", "epoch")
    assert adapter.report()["key_renamed"]["count"] == 1


def test_keys_that_become_equal_once_adapted_stay_apart(tmp_path: Path) -> None:
    caps = Capabilities(key_pattern=r"[\w/]+", param_types=(bool, int, float, str))
    adapter = Adapter("flat", caps, tmp_path)
    (params,) = adapter.adapt([ParamsLogged({"a/b": 1, "a": {"b": 2}, "c*": 3, "c?": 4}, 0.0)])
    assert isinstance(params, ParamsLogged)
    assert sorted(params.params.values()) == [1, 2, 3, 4]
    assert len(set(params.params)) == 4


def test_records_a_backend_cannot_take_are_left_out_and_reported(tmp_path: Path) -> None:
    caps = Capabilities(figures=False, histograms=False, artifacts=False)
    adapter = Adapter("metrics-only", caps, tmp_path)
    artifact = ArtifactLogged("ckpt", 1, "0" * 64, 1, "x", 0.0, None)
    assert adapter.adapt([FigureLogged("f", "f.png", 1, 0.0), _histogram(1), artifact]) == []
    assert {kind: v["count"] for kind, v in adapter.report().items()} == {
        "figures_left_out": 1,
        "histograms_left_out": 1,
        "artifacts_left_out": 1,
    }


def test_a_key_is_never_also_the_namespace_of_another_on_a_tree_backend(tmp_path: Path) -> None:
    """Neptune cannot hold ``opt`` and ``opt/lr`` both: the later one is renamed, reported."""
    adapter = Adapter("neptune-like", Capabilities(key_tree=True, param_types=(int,)), tmp_path)
    first = adapter.adapt([ParamsLogged({"opt": 1, "a": {"b": 1}}, 0.0)])
    (second,) = adapter.adapt([ParamsLogged({"opt": {"lr": 2}, "a": 3}, 1.0)])
    assert isinstance(first[0], ParamsLogged) and first[0].params == {"opt": 1, "a/b": 1}
    assert isinstance(second, ParamsLogged) and second.params["opt_lr"] == 2
    (a_key,) = set(second.params) - {"opt_lr"}
    assert a_key.startswith("a-") and second.params[a_key] == 3  # "a" is already a namespace
    assert adapter.report()["key_renamed"]["count"] == 2


def test_a_time_going_back_is_raised_per_series_and_reported(tmp_path: Path) -> None:
    adapter = Adapter("neptune-like", Capabilities(time_rule="non_decreasing"), tmp_path)
    record = dataclasses.replace(
        points(("a", "b"), [0, 1, 0, 1], [0, 0, 1, 1], [1.0] * 4), times=np.array([5.0, 9.0, 4.0, 9.5])
    )
    out = adapt_one(adapter, record)
    assert out.times.tolist() == [5.0, 9.0, 5.0, 9.5]  # only a's second time went back
    later = adapt_one(adapter, dataclasses.replace(points(("a",), [0], [2], [1.0]), times=np.array([4.5])))
    assert later.times.tolist() == [5.0]  # carried across batches
    assert adapter.report()["time_raised"] == {
        "count": 2,
        "examples": [
            {"metric": "a", "time": 4.0, "sent_as": 5.0},
            {"metric": "a", "time": 4.5, "sent_as": 5.0},
        ],
    }
