"""One training run as the record stream an exporter receives, for the record-by-record exporter tests."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from runtel.records import (
    ArtifactLogged,
    FigureLogged,
    Heartbeat,
    HistogramLogged,
    MetricPoints,
    ParamsLogged,
    Record,
    RunEnded,
    RunStarted,
    SpanEnded,
)

METRICS = ("train/loss", "train/acc", "lr")
STEPS = 1500
T0 = 1_700_000_000.0


def metric_points(steps: range) -> MetricPoints:
    """The three metrics at every step, in the order a training loop logs them; NaN and inf at a few."""
    step_col = np.repeat(np.asarray(steps, dtype=np.int64), len(METRICS))
    index = np.tile(np.arange(len(METRICS), dtype=np.int32), len(steps))
    values = np.sin(step_col * 0.01 + index) * (index + 1)
    values[(step_col % 97 == 0) & (index == 0)] = math.nan
    values[(step_col % 101 == 0) & (index == 1)] = math.inf
    return MetricPoints(
        names=METRICS,
        index=index,
        steps=step_col,
        times=T0 + step_col * 0.125 + index * 0.001,
        values=values,
        span_ids=np.zeros(len(index), dtype=np.uint64),
    )


def epoch_span(run_id: str, epoch: int, step_end: int) -> SpanEnded:
    return SpanEnded(
        name=f"epoch {epoch}",
        kind="epoch",
        trace_id=run_id,
        span_id=f"{epoch + 1:016x}",
        parent_span_id="00f067aa0ba902b7",
        start_time=T0,
        end_time=T0 + (step_end + 1) * 0.125,
        attributes={"epoch": epoch, "runtel.step_end": step_end},
    )


def training_stream(tmp_path: Path, run_id: str, *, artifact_version: int = 1) -> list[Record]:
    """Two epochs of 1,500 steps, params set and changed, a histogram, a figure, a model artifact,
    and a failed end with a summary: every record kind, in logging order."""
    weights = tmp_path / "weights.bin"
    weights.write_bytes(os.urandom(4096))
    figure = tmp_path / "confusion.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(figure)
    half = STEPS // 2
    return [
        RunStarted(
            run_id=run_id,
            name="resnet-baseline",
            project="runtel-tests",
            start_time=T0,
            config={"model": {"depth": 18, "width": 64}, "seed": 7},
            tags=("baseline", "cifar"),
        ),
        ParamsLogged(params={"optimizer": {"name": "adam", "lr": 3e-4, "betas": [0.9, 0.999]}}, time=T0),
        metric_points(range(half)),
        epoch_span(run_id, 0, half - 1),
        Heartbeat(time=T0 + 100),
        metric_points(range(half, STEPS)),
        epoch_span(run_id, 1, STEPS - 1),
        ParamsLogged(params={"optimizer": {"lr": 1e-4}}, time=T0 + 200),
        HistogramLogged(
            name="weights/conv1",
            step=STEPS - 1,
            time=T0 + 300,
            bin_edges=np.linspace(-1.0, 1.0, 9),
            counts=np.array([1, 4, 9, 16, 16, 9, 4, 1], dtype=np.int64),
            min=-1.0,
            max=1.0,
            mean=0.0,
            std=0.4,
            count=60,
        ),
        FigureLogged(name="confusion", path=str(figure), step=STEPS - 1, time=T0 + 350),
        ArtifactLogged(
            name="checkpoint",
            version=artifact_version,
            sha256="0" * 64,
            size=4096,
            path=str(weights),
            time=T0 + 400,
            step=STEPS - 1,
            kind="model",
        ),
        RunEnded(status="failed", end_time=T0 + 500, error="ValueError: boom", summary={"best_acc": 0.93}),
    ]
