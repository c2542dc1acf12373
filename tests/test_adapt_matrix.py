"""The hostile matrix: the real adaptation step and each real record exporter together.

One run per backend carries every hostile input at once (nested, long and oddly named params,
None, lists, empty dicts, NaN and ±inf, NaN in the summary, steps that go back or repeat, values
float32 rounds, unicode names, a user metric named like the exporter's own) and is read back with
the backend's own reader. Two things are checked for every backend: the backend holds exactly
what the adaptation step sent, and every difference between what was logged and what was sent
is counted in the report, each kind with an example.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runtel._adapt import Adapter
from runtel.exporters.base import EPOCH_SERIES, Exporter
from runtel.records import MetricPoints, ParamsLogged, Record, RunEnded, RunStarted, SpanEnded

RUN_ID = "9c1e7a3b5d2f4e6a8b0c1d2e3f405162"
T0 = 1_700_000_000.0
LONG_VALUE = "v" * 7000
LONG_KEY = "k" * 520

CONFIG: dict[str, Any] = {
    "bad": {"k*ey": 1},  # one odd character deep inside: MLflow once lost the whole export to it
    "model": {"layers": [64, 32], "act": None, "extra": {}, "name": "résnet-π"},
    "nested": {"deep": {"er": {"st": 0.1}}},
    "odd key!": {"we@ird": {"dee#p": 2}},
    "long": {"prompt": LONG_VALUE},
    LONG_KEY: 3,
    "nan": math.nan,
    "inf": math.inf,
    "ninf": -math.inf,
    "list_nan": [1.0, math.nan],
    "flag": True,
    "empty": {},
    "none": None,
    "unicodé": {"ключ": "значение"},
    "a/b": 1,
    "a": {"b": 2},  # the same flat key as "a/b"
    "-dash-": 4,
    "_under": 5,
    "x//y": 7,
    "opt": 1,  # later a namespace too: {"opt": {"lr": ...}}
}

NAMES = (
    "loss",
    "epoch",  # the user's own, beside the exporter's epochs
    "runtel/epoch",  # a user metric inside the exporters' namespace
    "acc*top1",
    "val//loss",
    "π/ε-métrique",
    "_private",
    "m" * 600,
    "system/cpu.utilization",
    "loss/ema",  # inside the name of another metric: a Neptune field cannot be a namespace too
)


def _points(rows: list[tuple[int, int, float]], t: float) -> MetricPoints:
    index, steps, values = zip(*rows, strict=True)
    n = len(rows)
    return MetricPoints(
        names=NAMES,
        index=np.asarray(index, dtype=np.int32),
        steps=np.asarray(steps, dtype=np.int64),
        times=t + np.arange(n, dtype=np.float64) * 0.001,
        values=np.asarray(values, dtype=np.float64),
        span_ids=np.zeros(n, dtype=np.uint64),
    )


def _segment(steps: range, scale: float) -> list[tuple[int, int, float]]:
    """Every metric at every step (system only every third step, sampled twice), in logging order."""
    rows: list[tuple[int, int, float]] = []
    specials = {2: math.nan, 3: math.inf, 4: -math.inf, 5: 1e300, 6: 0.1}
    for step in steps:
        for k, name in enumerate(NAMES):
            if name == "epoch" or name.startswith("system/"):
                continue
            value = specials.get(step, scale + step + k / 7.0) if name == "loss" else scale + step + k / 3.0
            rows.append((k, step, value))
        if step % 3 == 0:
            rows += [(8, step, 40.0 + step), (8, step, 41.0 + step)]
        if step % 5 == 4:
            rows.append((1, step, float(step // 5)))
    return rows


def _epoch(epoch: int, step_end: int) -> SpanEnded:
    return SpanEnded(
        name=f"epoch {epoch}",
        kind="epoch",
        trace_id=RUN_ID,
        span_id=f"{epoch + 1:016x}",
        parent_span_id=None,
        start_time=T0,
        end_time=T0 + 10 + epoch,
        attributes={"epoch": epoch, "runtel.step_end": step_end},
    )


def hostile_batches() -> list[list[Record]]:
    """Batches as the dispatcher would send them: start, two training segments (the second goes
    back to step 5, as a resumed run re-logging steps does), a changed param, the end."""
    summary = {
        "metrics": {
            "loss": {"count": 15, "min": math.nan, "max": math.inf, "last": -math.inf},
            "π/ε-métrique": {"count": 15, "min": 0.5, "max": 20.0, "last": 20.0},
        }
    }
    return [
        [
            RunStarted(RUN_ID, "hostile", "matrix", T0, CONFIG, tags=("matrix",)),
            ParamsLogged({"lr": 0.1, "sched": {"warm up": [1, None]}}, T0 + 1),
        ],
        [_points(_segment(range(10), 0.0), T0 + 2), _epoch(0, 9)],
        [
            ParamsLogged({"lr": 0.01, "opt": {"lr": 2}}, T0 + 20),
            _points(_segment(range(5, 10), 100.0), T0 + 30),
            _epoch(1, 9),
        ],
        [RunEnded("completed", T0 + 60, summary=summary)],
    ]


@dataclass
class Sent:
    """What the adaptation step sent, folded as a backend holds it, and its report."""

    points: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    epochs: list[tuple[int, int]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


def adapt_and_export(exporter: Exporter, scratch: Path) -> Sent:
    """Every batch through the real Adapter into the real exporter; the differences are counted."""
    adapter = Adapter(exporter.name, exporter.capabilities, scratch)
    sent = Sent()
    logged = moved = renamed_metrics = 0
    delivered = 0
    for batch in hostile_batches():
        out = adapter.adapt(batch)
        assert exporter.export(out).value == "success"
        for record, adapted in _pairs(batch, out, exporter):
            if isinstance(record, MetricPoints):
                logged += len(record)
                if adapted is None:
                    continue
                assert isinstance(adapted, MetricPoints)
                delivered += len(adapted)
                renamed_metrics += sum(a != b for a, b in zip(record.names, adapted.names, strict=True))
                kept = _kept(record, exporter)
                moved += int(np.count_nonzero(record.steps[kept] != adapted.steps))
        spans = [r for r in out if isinstance(r, SpanEnded)]
        for span, adapted_span in zip([r for r in batch if isinstance(r, SpanEnded)], spans, strict=True):
            moved += span.attributes["runtel.step_end"] != adapted_span.attributes["runtel.step_end"]
        for record in out:
            _fold(sent, record)
    exporter.shutdown()
    sent.report = adapter.report()
    counts = {kind: entry["count"] for kind, entry in sent.report.items()}
    assert all(entry["examples"] for entry in sent.report.values()), sent.report  # each with an example
    assert logged - delivered == counts.get("non_finite_dropped", 0)
    assert moved == counts.get("step_shifted", 0) + counts.get("step_moved", 0)
    metric_renames = [
        e for e in sent.report.get("key_renamed", {}).get("examples", []) if e["kind"] == "metric"
    ]
    assert renamed_metrics >= len(metric_renames)
    return sent


def _pairs(
    batch: list[Record], out: list[Record], exporter: Exporter
) -> Iterator[tuple[MetricPoints, Record | None]]:
    """Each logged metric batch with what it became (``None`` when every point was dropped)."""
    adapted = iter([r for r in out if isinstance(r, MetricPoints)])
    for record in batch:
        if isinstance(record, MetricPoints):
            yield record, (next(adapted) if _kept(record, exporter).any() else None)


def _kept(record: MetricPoints, exporter: Exporter) -> np.ndarray:
    """The points the backend can take at all (Neptune refuses NaN and ±inf)."""
    if exporter.capabilities.non_finite_values == "drop":
        return np.isfinite(record.values)
    return np.ones(len(record), dtype=bool)


def _fold(sent: Sent, record: Record) -> None:
    if isinstance(record, MetricPoints):
        for i, step, value in zip(
            record.index.tolist(), record.steps.tolist(), record.values.tolist(), strict=True
        ):
            sent.points.setdefault(record.names[i], []).append((step, value))
    elif isinstance(record, RunStarted):
        sent.params.update(record.config)
    elif isinstance(record, ParamsLogged):
        sent.params.update(record.params)
    elif isinstance(record, SpanEnded):
        sent.epochs.append((int(record.attributes["runtel.step_end"]), int(record.attributes["epoch"])))
    elif isinstance(record, RunEnded):
        sent.summary = record.summary


def same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def assert_series(
    held: dict[str, list[tuple[int, float]]], sent: Sent, cast: Callable[[float], float]
) -> None:
    """The backend holds every point sent, at its step, with its value (as the backend stores it)."""
    assert set(held) == set(sent.points)
    for name, points in sent.points.items():
        expected = sorted((step, repr(cast(value))) for step, value in points)
        got = sorted((step, repr(float(value))) for step, value in held[name])
        assert got == expected, name


def assert_reported(sent: Sent, *kinds: str) -> None:
    missing = [kind for kind in kinds if kind not in sent.report]
    assert not missing, sent.report


# ---------------------------------------------------------------------------------------- MLflow
def test_mlflow_holds_every_adapted_value(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from runtel.exporters.mlflow import MlflowExporter

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exporter = MlflowExporter(uri, "matrix", artifact_location=str(tmp_path / "artifacts"))
    sent = adapt_and_export(exporter, tmp_path / "adapted")
    client = MlflowClient(uri)
    assert exporter.mlflow_run_id is not None
    run = client.get_run(exporter.mlflow_run_id)

    assert run.data.params == sent.params
    assert run.data.params["bad/k_ey"] == "1"
    assert run.data.params["long/prompt"] == LONG_VALUE[:6000]  # the value itself, not a repr
    assert run.data.params["model/layers"] == "[64, 32]" and run.data.params["model/act"] == "null"
    assert run.data.params["lr"] == "0.1" and run.data.params["lr.v2"] == "0.01"
    held = {
        name: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, name)]
        for name in sent.points
    }
    assert_series(held, sent, float)
    assert sum(len(p) for p in held.values()) == sum(len(p) for p in sent.points.values()) > 0
    epochs = [(m.step, int(m.value)) for m in client.get_metric_history(run.info.run_id, EPOCH_SERIES)]
    assert epochs == sent.epochs
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "runtel-params")}
    assert any("long" in path for path in artifacts)
    assert_reported(
        sent, "params_flattened", "param_stringified", "param_truncated", "param_changed", "key_renamed",
        "infinity_clamped",
    )  # fmt: skip
    assert "step_shifted" not in sent.report and "step_moved" not in sent.report  # MLflow takes any step


# ----------------------------------------------------------------------------------- TensorBoard
def test_tensorboard_holds_every_adapted_value(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from runtel.exporters.tensorboard import TensorBoardExporter

    exporter = TensorBoardExporter(str(tmp_path / "tb"))
    sent = adapt_and_export(exporter, tmp_path / "adapted")
    assert exporter.run_dir is not None
    accumulator = EventAccumulator(exporter.run_dir, size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    held = {name: [(e.step, e.value) for e in accumulator.Scalars(name)] for name in sent.points}
    with np.errstate(over="ignore"):
        assert_series(held, sent, lambda v: float(np.float32(v)))
    assert [(e.step, int(e.value)) for e in accumulator.Scalars(EPOCH_SERIES)] == sent.epochs
    assert [(e.step, e.value) for e in accumulator.Scalars("epoch")] == [(4, 0.0), (9, 1.0), (10, 1.0)]

    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    held_params = {key: getattr(value, value.WhichOneof("kind")) for key, value in hparams.items()}
    assert set(held_params) == set(sent.params)
    for key, value in sent.params.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        assert same(held_params[key], float(value) if number else value), key

    moved = sent.report["step_moved"]["examples"]
    assert {
        "metric": "system/cpu.utilization",
        "step": 0,
        "sent_as": 1,
        "reason": "two points at one step",
    } in moved
    shifted = sent.report["step_shifted"]["examples"]
    assert all(e["reason"] == "step went backwards" for e in shifted) and shifted
    assert_reported(sent, "params_flattened", "param_stringified", "value_rounded_to_float32", "key_renamed")


# ------------------------------------------------------------------------------------------ W&B
@pytest.fixture
def _offline_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


@pytest.mark.usefixtures("_offline_wandb")
def test_wandb_holds_every_adapted_value(tmp_path: Path) -> None:
    from runtel.exporters.wandb import WandbExporter
    from tests.readers.wandb_log import read_finished_log

    exporter = WandbExporter(mode="offline", dir=str(tmp_path))
    sent = adapt_and_export(exporter, tmp_path / "adapted")
    log = read_finished_log(tmp_path, RUN_ID)

    held: dict[str, list[tuple[int, float]]] = {}
    for step, row in log.history.items():
        for key, value in row.items():
            if key in sent.points:
                held.setdefault(key, []).append((step, value))
    assert_series(held, sent, float)
    assert (
        sorted((s, row[EPOCH_SERIES]) for s, row in log.history.items() if EPOCH_SERIES in row) == sent.epochs
    )
    config = {k: v for k, v in log.config.items() if not k.startswith("_")}
    assert set(config) == set(sent.params)
    for key, value in sent.params.items():
        assert json.dumps(config[key], sort_keys=True) == json.dumps(value, sort_keys=True), key
    assert config["bad"] == {"k*ey": 1} and config["long"] == {"prompt": LONG_VALUE}  # W&B holds both
    loss = log.summary["metrics"]["loss"]
    assert (
        loss == sent.summary["metrics"]["loss"] == {"count": 15, "min": "nan", "max": "inf", "last": "-inf"}
    )
    assert_reported(
        sent, "step_shifted", "step_moved", "param_stringified", "summary_stringified", "key_renamed"
    )


# --------------------------------------------------------------------------------------- Neptune
def test_neptune_holds_every_adapted_value(tmp_path: Path) -> None:
    from runtel.exporters.neptune import NeptuneExporter
    from tests.readers.neptune_offline import offline_runs, read_run

    exporter = NeptuneExporter(mode="offline", data_directory=str(tmp_path / "neptune"))
    sent = adapt_and_export(exporter, tmp_path / "adapted")
    (folder,) = offline_runs(tmp_path / "neptune")
    run = read_run(folder)

    held = {name: [(int(s or 0), v) for s, v, _ in run.series[f"metrics/{name}"]] for name in sent.points}
    assert_series(held, sent, float)
    assert [(int(s or 0), int(v)) for s, v, _ in run.series[EPOCH_SERIES]] == sent.epochs
    params = {k.removeprefix("parameters/"): v for k, v in run.fields.items() if k.startswith("parameters/")}
    assert params == sent.params
    summary = {k.removeprefix("summary/"): v for k, v in run.fields.items() if k.startswith("summary/")}
    assert summary == sent.summary
    assert summary["metrics/loss/min"] == "nan" and summary["metrics/loss/max"] == "inf"
    assert params["opt"] == 1 and params["opt_lr"] == 2 and "loss_ema" in sent.points
    stringified = sent.report["param_stringified"]["examples"]
    assert any(e["kind"] == "parameter" for e in stringified)
    assert_reported(
        sent, "params_flattened", "param_stringified", "non_finite_dropped", "step_shifted", "step_moved",
        "key_renamed",
    )  # fmt: skip
    assert {"kind": "summary", "key": "metrics/loss/min", "sent_as": "nan", "reason": "NaN or infinity"} in (
        sent.report["summary_stringified"]["examples"]
    )
