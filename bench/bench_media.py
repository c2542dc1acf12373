"""Training-thread cost of logging media: runtel against wandb, tensorboardX and MLflow, same inputs.

Two cases, each call timed on its own (``time.perf_counter_ns``), median and p90 per call:

- an image: 256x256 RGB uint8 (numpy HWC), a different one each step (16 distinct arrays in turn);
- a table of 1,000 rows (int, float, str, float columns), a pandas DataFrame (runtel is also timed
  with the same table as a list of rows, its path that needs no pandas).

Back to back, the calls are runtel's worst case: the flush thread cannot encode PNGs as fast as they
come, so no encoded image's buffer is free for reuse and each copy lands in fresh memory.

Peers: ``wandb.log({k: wandb.Image(x)}, step=)`` / ``wandb.Table(dataframe=)`` offline;
tensorboardX ``add_image(..., dataformats="HWC")`` (no table type: not timed); MLflow 3
``log_image(x, key=, step=)`` / ``log_table(df, artifact_file=)`` on SQLite. runtel's ``finish()``
(where the deferred encoding and writing end) is timed apart and its stored items counted back.
Usage: ``python bench/bench_media.py [--images 200] [--tables 30]``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from _common import dist_version, fmt_us, log, machine_table, md_table

#: Issue 13's bound on the training thread's cost of one 256x256 RGB image.
TARGET_IMAGE_US = 100.0


@dataclass
class Timing:
    backend: str
    call: str
    case: str
    samples_ns: list[int]
    note: str = ""

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples_ns) / 1e3

    @property
    def p90_us(self) -> float:
        ordered = sorted(self.samples_ns)
        return ordered[int(0.9 * (len(ordered) - 1))] / 1e3


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(16)]


def _rows() -> tuple[list[list[object]], list[str]]:
    rng = np.random.default_rng(1)
    rows = [[i, float(rng.normal()), f"sample {i}", float(rng.random())] for i in range(1000)]
    return rows, ["id", "score", "label", "p"]


def _timed(calls: int, body: Callable[[int], object]) -> list[int]:
    samples = []
    for step in range(calls):
        start = time.perf_counter_ns()
        body(step)
        samples.append(time.perf_counter_ns() - start)
    return samples


@contextlib.contextmanager
def _folder(prefix: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix=f"runtel-bench-media-{prefix}-") as tmp:
        yield tmp


def bench_runtel(
    images: list[np.ndarray], frame: object, rows: list[list[object]], columns: list[str], n: int, m: int
) -> list[Timing]:
    import runtel

    out = []
    with _folder("runtel") as tmp:
        run = runtel.init(project="bench", base_dir=tmp, system_interval=0)
        out.append(
            Timing(
                "runtel",
                "`run.log_image(k, x, step=)`",
                "image",
                _timed(n, lambda s: run.log_image("img", images[s % 16], step=s)),
            )
        )
        out.append(
            Timing(
                "runtel",
                "`run.log({k: runtel.Image(x)}, step=)`",
                "image",
                _timed(n, lambda s: run.log({"img2": runtel.Image(images[s % 16])}, step=s)),
            )
        )
        out.append(
            Timing(
                "runtel",
                "`run.log_table(k, df, step=)`",
                "table",
                _timed(m, lambda s: run.log_table("tab", frame, step=s)),
            )
        )
        out.append(
            Timing(
                "runtel",
                "`run.log_table(k, rows, columns=, step=)`",
                "table",
                _timed(m, lambda s: run.log_table("rows", rows, columns=columns, step=s)),
            )
        )
        start = time.perf_counter()
        run.finish()
        finish = time.perf_counter() - start
        stored = runtel.Store(tmp).run(run.id).media_names()
    expected = {"img": n, "img2": n, "tab": m, "rows": m}
    note = f"finish() {finish:.2f} s; stored {sum(stored.values())}/{sum(expected.values())} items"
    if stored != expected:
        raise SystemExit(f"runtel stored {stored}, expected {expected}")
    for timing in out:
        timing.note = note
    return out


def bench_wandb(images: list[np.ndarray], frame: object, n: int, m: int) -> list[Timing]:
    import wandb

    with _folder("wandb") as tmp:
        os.environ["WANDB_DIR"] = tmp
        run = wandb.init(
            project="bench",
            dir=tmp,
            mode="offline",
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )
        image = _timed(n, lambda s: run.log({"img": wandb.Image(images[s % 16])}, step=s))
        table = _timed(m, lambda s: run.log({"tab": wandb.Table(dataframe=frame)}, step=n + s))
        run.finish()
    return [
        Timing("wandb", "`run.log({k: wandb.Image(x)}, step=)`", "image", image),
        Timing("wandb", "`run.log({k: wandb.Table(dataframe=df)}, step=)`", "table", table),
    ]


def bench_tensorboardx(images: list[np.ndarray], n: int) -> list[Timing]:
    from tensorboardX import SummaryWriter

    with _folder("tbx") as tmp:
        writer = SummaryWriter(logdir=tmp)
        image = _timed(n, lambda s: writer.add_image("img", images[s % 16], s, dataformats="HWC"))
        writer.close()
    return [Timing("tensorboardX", '`add_image(k, x, step, dataformats="HWC")`', "image", image)]


def bench_mlflow(images: list[np.ndarray], frame: object, n: int, m: int) -> list[Timing]:
    import mlflow

    with _folder("mlflow") as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        mlflow.set_experiment("bench")
        with mlflow.start_run():
            image = _timed(n, lambda s: mlflow.log_image(images[s % 16], key="img", step=s))
            table = _timed(m, lambda s: mlflow.log_table(frame, artifact_file=f"tab_{s}.json"))
    return [
        Timing("mlflow", "`mlflow.log_image(x, key=, step=)`, SQLite", "image", image),
        Timing("mlflow", "`mlflow.log_table(df, artifact_file=)`, SQLite", "table", table),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="image calls per backend")
    parser.add_argument("--tables", type=int, default=30, help="table calls per backend")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    import pandas as pd

    images = _images()
    rows, columns = _rows()
    frame = pd.DataFrame(rows, columns=columns)
    timings: list[Timing] = []
    log("runtel ...")
    timings += bench_runtel(images, frame, rows, columns, args.images, args.tables)
    log("wandb ...")
    timings += bench_wandb(images, frame, args.images, args.tables)
    log("tensorboardX ...")
    timings += bench_tensorboardx(images, args.images)
    log("mlflow ...")
    timings += bench_mlflow(images, frame, args.images, args.tables)

    print(machine_table())
    print()
    print(
        "Versions: "
        + ", ".join(
            f"{name} {dist_version(name)}"
            for name in ("runtel", "wandb", "tensorboardX", "mlflow", "pillow", "pandas")
        )
    )
    for case, title in (("image", "256x256 RGB uint8 image"), ("table", "table of 1,000 rows x 4 columns")):
        calls = args.images if case == "image" else args.tables
        print(f"\n### {title}: training-thread cost per call ({calls} calls)\n")
        rows_out = [t for t in timings if t.case == case]
        base = rows_out[0].median_us
        print(
            md_table(
                ["backend", "call", "median", "p90", "vs runtel", "note"],
                [
                    [
                        t.backend,
                        t.call,
                        fmt_us(t.median_us),
                        fmt_us(t.p90_us),
                        f"{t.median_us / base:.1f}x",
                        t.note,
                    ]
                    for t in rows_out
                ],
            )
        )
    image_us = timings[0].median_us
    verdict = "within" if image_us < TARGET_IMAGE_US else "OVER"
    print(f"\nruntel log_image median {image_us:.1f} us: {verdict} the {TARGET_IMAGE_US:.0f} us target.")


if __name__ == "__main__":
    main()
