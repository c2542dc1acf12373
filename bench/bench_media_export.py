"""Cost of sending media to each backend, on the exporter's background thread (live or replay).

A run logs the items through ``runtel`` (to its local store only); its stored records
(``runtel.replay.records_of``, as ``runtel export`` reads them) then go through the adaptation step
and each exporter with its real client, offline: W&B offline, MLflow on SQLite, TensorBoard event
files, Neptune offline. Two streams, timed apart (adaptation, then ``export`` in batches of 16 records):

- ``image``: 64x64 RGB uint8 PNGs, each a distinct image at its own step;
- ``table``: tables of 100 rows (int, float, str), one per step.

Also the adaptation step alone per record: an image that fits (passed on as it is) and a float
image sent as its 8-bit preview (the preview file hashed). Usage:
``python bench/bench_media_export.py [--images 200] [--tables 40]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import machine_table, md_table

import runtel
from runtel._adapt import Adapter
from runtel.exporters.base import Exporter, ExportResult
from runtel.records import MediaLogged, Record
from runtel.replay import records_of

BATCH = 16


def exporters(tmp: Path) -> dict[str, Callable[[], Exporter]]:
    from runtel.exporters.mlflow import MlflowExporter
    from runtel.exporters.neptune import NeptuneExporter
    from runtel.exporters.tensorboard import TensorBoardExporter
    from runtel.exporters.wandb import WandbExporter

    return {
        "W&B": lambda: WandbExporter(mode="offline", dir=str(tmp / "wandb")),
        "MLflow": lambda: MlflowExporter(
            f"sqlite:///{tmp}/mlflow.db", "bench", artifact_location=str(tmp / "ml")
        ),
        "TensorBoard": lambda: TensorBoardExporter(str(tmp / "tb"), force=True),
        "Neptune": lambda: NeptuneExporter(data_directory=str(tmp / "neptune")),
    }


def stored_records(base: Path, kind: str, count: int) -> list[Record]:
    """A run with ``count`` images or tables, logged and stored by runtel, read back as records."""
    rng = np.random.default_rng(0)
    with runtel.init(project="bench", name=kind, base_dir=str(base), system_interval=0) as run:
        for step in range(count):
            if kind == "image":
                run.log_image("samples", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), step=step)
            else:
                rows = [[i, i / 3, f"row {i} at {step}"] for i in range(100)]
                run.log_table("eval", rows, columns=["id", "x", "s"], step=step)
    return list(records_of(runtel.Store(base).run(run.id)))


def export_seconds(make: Callable[[], Exporter], records: list[Record], scratch: Path) -> tuple[float, float]:
    exporter = make()
    adapter = Adapter(exporter.name, exporter.capabilities, scratch)
    adapt = send = 0.0
    for lo in range(0, len(records), BATCH):
        started = time.perf_counter()
        batch = adapter.adapt(records[lo : lo + BATCH])
        adapted = time.perf_counter()
        assert exporter.export(batch) is ExportResult.SUCCESS
        adapt, send = adapt + adapted - started, send + time.perf_counter() - adapted
    started = time.perf_counter()
    exporter.force_flush()
    exporter.shutdown()
    return adapt, send + time.perf_counter() - started


def adapt_us(tmp: Path, records: list[Record], repeats: int = 5) -> float:
    """Median per-record µs of adapting ``records`` for W&B (fresh adapter each repeat)."""
    from runtel.exporters.wandb import CAPABILITIES

    runs = []
    for r in range(repeats):
        adapter = Adapter("wandb", CAPABILITIES, tmp / f"adapt-{r}")
        started = time.perf_counter()
        adapter.adapt(records)
        runs.append((time.perf_counter() - started) / len(records) * 1e6)
    return float(np.median(runs))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--tables", type=int, default=40)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    logging.getLogger("runtel").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        os.environ["WANDB_DATA_DIR"] = str(tmp / "wandb-data")
        rows = []
        for kind, count in (("image", args.images), ("table", args.tables)):
            for number, (backend, make) in enumerate(exporters(tmp).items()):
                records = stored_records(tmp / f"runs-{kind}-{number}", kind, count)
                adapt, send = export_seconds(make, records, tmp / f"adapted-{kind}-{number}")
                rows.append(
                    [backend, kind, str(count), f"{adapt / count * 1e6:.0f}", f"{send / count * 1e3:.2f}"]
                )
                print(rows[-1], flush=True)
        with runtel.init(
            project="bench", name="adapt", base_dir=str(tmp / "adapt"), system_interval=0
        ) as run:
            for s in range(500):
                run.log_image("img", np.full((16, 16, 3), s % 256, dtype=np.uint8), step=s)
                run.log_image("depth", np.full((16, 16), s / 500, dtype=np.float32), step=s)
        stored = [
            r for r in records_of(runtel.Store(tmp / "adapt").run(run.id)) if isinstance(r, MediaLogged)
        ]
        fitting = [r for r in stored if r.name == "img"]
        floats = [r for r in stored if r.name == "depth"]
        passthrough, preview = adapt_us(tmp, fitting), adapt_us(tmp, floats)
    print(machine_table())
    print(md_table(["backend", "stream", "items", "adaptation µs/item", "export ms/item"], rows))
    print(
        md_table(
            ["adaptation (W&B capabilities)", "µs/record"],
            [
                ["uint8 image, passed on as it is", f"{passthrough:.1f}"],
                ["float image, sent as its preview", f"{preview:.1f}"],
            ],
        )
    )


if __name__ == "__main__":
    main()
