"""Hot-path cost of logging a metric: runtel ``run.log`` against its peers, in one process, one run.

Two cases: (a) 10 metrics per step, (b) 1 metric per step. Each backend logs the same pre-built values;
only the logging loop is timed (``time.perf_counter_ns``); set-up (``init``) and tear-down (``finish``,
flush, ``close``) are timed separately and reported, never folded into the per-point figure.
The store write/read and import figures of ``bench_store.py`` are printed with them (``--skip-store``
leaves them out). Usage: ``python bench/bench_log.py [--quick] [--points N] [--only runtel,wandb]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import logging
import os
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import bench_hotpath
import bench_store
from _common import Result, Trial, dist_version, fmt_s, fmt_us, log, machine_table, md_table

Step = dict[str, float]
TrialFn = Callable[[list[Step], list[Step]], Trial]

#: Design targets (docs/design.md section 5): per point, per call, and speed-up over the fastest peer.
TARGET_US_POINT = 2.0
TARGET_US_CALL = 5.0
TARGET_SPEEDUP = 20.0

#: Peer figures quoted in design.md section 5 (us per point: 10 metrics a step / 1 a step).
DESIGN_FIGURES = {
    "list.append": "0.2 / 1",
    "opentelemetry": "18 / 26",
    "tensorboardX": "75 / 75",
    "wandb": "46 / 224",
    "mlflow": "61 / 734",
    "neptune": "70 / 71",
}


@dataclass
class Case:
    """One workload shape."""

    key: str
    title: str
    metrics: int


CASES = (Case("a", "(a) 10 metrics per step", 10), Case("b", "(b) 1 metric per step", 1))


def make_steps(points: int, metrics: int, seed: int) -> tuple[list[Step], list[Step]]:
    """Warm-up and timed steps, each a ``{name: float}`` dict; ``points`` points in the timed part."""
    rnd = random.Random(seed)
    names = [f"m{j}" for j in range(metrics)]
    steps = max(1, points // metrics)
    warm = max(1, min(100, steps // 10))
    rows = [{n: rnd.random() for n in names} for _ in range(warm + steps)]
    return rows[:warm], rows[warm:]


@contextlib.contextmanager
def quiet_cwd(path: str) -> Iterator[None]:
    """Run a block in ``path`` (for libraries that write next to the working directory)."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _ns() -> int:
    gc.collect()
    return time.perf_counter_ns()


def _points(rows: list[Step]) -> int:
    return sum(len(r) for r in rows)


# --------------------------------------------------------------------------- backends


def trial_list(warm: list[Step], timed: list[Step]) -> Trial:
    """Floor: append a (step, time, value) tuple per point to a per-metric list; one clock read a step."""
    bufs: dict[str, list[tuple[int, float, float]]] = {n: [] for n in timed[0]}
    now = time.time
    for step, row in enumerate(warm):
        t = now()
        for name, v in row.items():
            bufs[name].append((step, t, v))
    first = len(warm)
    t0 = _ns()
    for step, row in enumerate(timed, first):
        t = now()
        for name, v in row.items():
            bufs[name].append((step, t, v))
    t1 = time.perf_counter_ns()
    return Trial(_points(timed), len(timed), t1 - t0)


def trial_runtel(warm: list[Step], timed: list[Step]) -> Trial:
    """runtel ``run.log(dict)`` with the step auto-incremented; ``finish()`` timed apart; read back."""
    import runtel

    with tempfile.TemporaryDirectory(prefix="runtel-bench-") as tmp:
        s0 = time.perf_counter_ns()
        run = runtel.init(project="bench", name="hot", base_dir=tmp, system_interval=0)
        s1 = time.perf_counter_ns()
        for row in warm:
            run.log(row)
        t0 = _ns()
        for row in timed:
            run.log(row)
        t1 = time.perf_counter_ns()
        run.finish()
        t2 = time.perf_counter_ns()
        store = runtel.Store(tmp).run(run.id)
        expected = len(warm) + len(timed)
        missing = sum(expected - len(store.history(n)[0]) for n in timed[0])
    return Trial(
        _points(timed),
        len(timed),
        t1 - t0,
        {"init": (s1 - s0) / 1e9, "finish": (t2 - t1) / 1e9, "missing": float(missing)},
    )


def trial_otel(warm: list[Step], timed: list[Step]) -> Trial:
    """OpenTelemetry SDK: ``Gauge.set`` per point plus ``InMemoryMetricReader.collect()`` per step."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("runtel-bench")
    gauges = {n: meter.create_gauge(n) for n in timed[0]}
    collect = reader.collect
    for row in warm:
        for name, v in row.items():
            gauges[name].set(v)
        collect()
    t0 = _ns()
    for row in timed:
        for name, v in row.items():
            gauges[name].set(v)
        collect()
    t1 = time.perf_counter_ns()
    provider.shutdown()
    return Trial(_points(timed), len(timed), t1 - t0)


def trial_tensorboardx(warm: list[Step], timed: list[Step]) -> Trial:
    """tensorboardX ``SummaryWriter.add_scalar`` per point; ``close()`` (flush) timed apart."""
    from tensorboardX import SummaryWriter

    with tempfile.TemporaryDirectory(prefix="runtel-bench-tbx-") as tmp:
        s0 = time.perf_counter_ns()
        writer = SummaryWriter(logdir=tmp)
        s1 = time.perf_counter_ns()
        add = writer.add_scalar
        for step, row in enumerate(warm):
            for name, v in row.items():
                add(name, v, step)
        first = len(warm)
        t0 = _ns()
        for step, row in enumerate(timed, first):
            for name, v in row.items():
                add(name, v, step)
        t1 = time.perf_counter_ns()
        writer.close()
        t2 = time.perf_counter_ns()
    return Trial(_points(timed), len(timed), t1 - t0, {"init": (s1 - s0) / 1e9, "finish": (t2 - t1) / 1e9})


def trial_wandb(warm: list[Step], timed: list[Step]) -> Trial:
    """wandb offline ``run.log(dict, step=...)``; ``wandb.init`` and ``run.finish()`` timed apart."""
    import wandb

    with tempfile.TemporaryDirectory(prefix="runtel-bench-wandb-") as tmp:
        os.environ["WANDB_DIR"] = tmp
        settings = wandb.Settings(console="off", x_disable_stats=True)
        s0 = time.perf_counter_ns()
        run = wandb.init(project="bench", dir=tmp, mode="offline", settings=settings)
        s1 = time.perf_counter_ns()
        for step, row in enumerate(warm):
            run.log(row, step=step)
        first = len(warm)
        t0 = _ns()
        for step, row in enumerate(timed, first):
            run.log(row, step=step)
        t1 = time.perf_counter_ns()
        run.finish()
        t2 = time.perf_counter_ns()
    return Trial(_points(timed), len(timed), t1 - t0, {"init": (s1 - s0) / 1e9, "finish": (t2 - t1) / 1e9})


class MlflowBench:
    """MLflow async ``log_metrics`` on one SQLite store (created once: its migration is set-up cost)."""

    def __init__(self) -> None:
        self.tmp = ""
        self.setup_s: float | None = None

    def trial(self, warm: list[Step], timed: list[Step]) -> Trial:
        """One fresh MLflow run: ``log_metrics(..., synchronous=False)`` per step, then flush + end_run."""
        import mlflow

        if self.setup_s is None:
            self.tmp = tempfile.mkdtemp(prefix="runtel-bench-mlflow-")
            s0 = time.perf_counter_ns()
            mlflow.set_tracking_uri(f"sqlite:///{self.tmp}/mlflow.db")
            mlflow.set_experiment("bench")
            self.setup_s = (time.perf_counter_ns() - s0) / 1e9
        s0 = time.perf_counter_ns()
        run = mlflow.start_run()
        s1 = time.perf_counter_ns()
        log_metrics = mlflow.log_metrics
        for step, row in enumerate(warm):
            log_metrics(row, step=step, synchronous=False)
        first = len(warm)
        t0 = _ns()
        for step, row in enumerate(timed, first):
            log_metrics(row, step=step, synchronous=False)
        t1 = time.perf_counter_ns()
        mlflow.flush_async_logging()
        mlflow.end_run()
        t2 = time.perf_counter_ns()
        client = mlflow.MlflowClient()
        expected = len(warm) + len(timed)
        missing = sum(expected - len(client.get_metric_history(run.info.run_id, n)) for n in timed[0])
        return Trial(
            _points(timed),
            len(timed),
            t1 - t0,
            {"init": (s1 - s0) / 1e9, "finish": (t2 - t1) / 1e9, "missing": float(missing)},
        )

    def close(self) -> None:
        """Remove the SQLite store."""
        import shutil

        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def trial_neptune(warm: list[Step], timed: list[Step]) -> Trial:
    """neptune 1.x offline ``run[name].append(value, step=...)`` per point; ``stop()`` timed apart."""
    import neptune

    with tempfile.TemporaryDirectory(prefix="runtel-bench-neptune-") as tmp, quiet_cwd(tmp):
        s0 = time.perf_counter_ns()
        run = neptune.init_run(
            project="bench/bench",
            mode="offline",
            capture_stdout=False,
            capture_stderr=False,
            capture_hardware_metrics=False,
            capture_traceback=False,
            source_files=[],
            git_ref=False,
        )
        s1 = time.perf_counter_ns()
        for step, row in enumerate(warm):
            for name, v in row.items():
                run[name].append(v, step=step)
        first = len(warm)
        t0 = _ns()
        for step, row in enumerate(timed, first):
            for name, v in row.items():
                run[name].append(v, step=step)
        t1 = time.perf_counter_ns()
        run.stop()
        t2 = time.perf_counter_ns()
    return Trial(_points(timed), len(timed), t1 - t0, {"init": (s1 - s0) / 1e9, "finish": (t2 - t1) / 1e9})


def trial_trackio(warm: list[Step], timed: list[Step]) -> Trial:
    """trackio ``trackio.log(dict, step=...)`` into a local SQLite project; ``finish()`` timed apart."""
    with tempfile.TemporaryDirectory(prefix="runtel-bench-trackio-") as tmp:
        os.environ["TRACKIO_DIR"] = tmp
        import trackio

        s0 = time.perf_counter_ns()
        trackio.init(project=f"bench-{os.path.basename(tmp)}")
        s1 = time.perf_counter_ns()
        for step, row in enumerate(warm):
            trackio.log(row, step=step)
        first = len(warm)
        t0 = _ns()
        for step, row in enumerate(timed, first):
            trackio.log(row, step=step)
        t1 = time.perf_counter_ns()
        trackio.finish()
        t2 = time.perf_counter_ns()
    return Trial(_points(timed), len(timed), t1 - t0, {"init": (s1 - s0) / 1e9, "finish": (t2 - t1) / 1e9})


def trial_aim(warm: list[Step], timed: list[Step]) -> Trial:
    """aim ``Run.track(dict, step=...)`` into a local repo; ``close()`` timed apart."""
    from aim import Run

    # aim's storage closes its files from a finalizer after close(): the folder outlives the trial
    # (removed with ignore_cleanup_errors when the process is done with it).
    with tempfile.TemporaryDirectory(prefix="runtel-bench-aim-", ignore_cleanup_errors=True) as tmp:
        s0 = time.perf_counter_ns()
        run = Run(repo=tmp, experiment="bench", system_tracking_interval=None, capture_terminal_logs=False)
        s1 = time.perf_counter_ns()
        for step, row in enumerate(warm):
            run.track(row, step=step)
        first = len(warm)
        t0 = _ns()
        for step, row in enumerate(timed, first):
            run.track(row, step=step)
        t1 = time.perf_counter_ns()
        run.close()
        t2 = time.perf_counter_ns()
        del run
        gc.collect()
    return Trial(_points(timed), len(timed), t1 - t0, {"init": (s1 - s0) / 1e9, "finish": (t2 - t1) / 1e9})


def trial_dvclive(warm: list[Step], timed: list[Step]) -> Trial:
    """dvclive ``Live.log_metric`` per point and ``next_step()`` per step (it writes each step's files)."""
    from dvclive import Live

    with tempfile.TemporaryDirectory(prefix="runtel-bench-dvclive-") as tmp, quiet_cwd(tmp):
        s0 = time.perf_counter_ns()
        live = Live(dir=os.path.join(tmp, "live"), save_dvc_exp=False, report=None, dvcyaml=None)
        s1 = time.perf_counter_ns()
        for row in warm:
            for name, v in row.items():
                live.log_metric(name, v)
            live.next_step()
        t0 = _ns()
        for row in timed:
            for name, v in row.items():
                live.log_metric(name, v)
            live.next_step()
        t1 = time.perf_counter_ns()
        live.end()
        t2 = time.perf_counter_ns()
    return Trial(_points(timed), len(timed), t1 - t0, {"init": (s1 - s0) / 1e9, "finish": (t2 - t1) / 1e9})


@dataclass
class Backend:
    """A backend to measure: how to run one trial, what it needs installed, how many points it gets."""

    name: str
    module: str | None
    dist: str | None
    pip: str
    api: str
    slow: bool = False
    points_override: int | None = None
    fn: TrialFn | None = None


def backends(args: argparse.Namespace, mlflow_bench: MlflowBench) -> list[Backend]:
    """All backends, in the order they run (runtel first, before the peers leave threads behind)."""
    return [
        Backend("list.append", None, None, "", "`list.append((step, t, v))` per point", fn=trial_list),
        Backend("runtel", "runtel", "runtel", "pip install -e .", "`run.log(dict)`", fn=trial_runtel),
        Backend(
            "opentelemetry",
            "opentelemetry.sdk",
            "opentelemetry-sdk",
            "pip install opentelemetry-sdk",
            "`Gauge.set` per point + `InMemoryMetricReader.collect()` per step",
            fn=trial_otel,
        ),
        Backend(
            "tensorboardX",
            "tensorboardX",
            "tensorboardX",
            "pip install tensorboardX",
            "`SummaryWriter.add_scalar` per point",
            slow=True,
            fn=trial_tensorboardx,
        ),
        Backend(
            "neptune",
            "neptune",
            "neptune",
            'pip install "neptune>=1.10,<2"',
            "offline `run[name].append(v, step=)` per point",
            slow=True,
            fn=trial_neptune,
        ),
        Backend(
            "mlflow",
            "mlflow",
            "mlflow",
            'pip install "mlflow>=3"',
            "`mlflow.log_metrics(dict, step=, synchronous=False)`, SQLite",
            points_override=args.mlflow_points,
            fn=mlflow_bench.trial,
        ),
        Backend(
            "wandb",
            "wandb",
            "wandb",
            'pip install "wandb>=0.19"',
            "offline `run.log(dict, step=)`",
            slow=True,
            fn=trial_wandb,
        ),
        Backend(
            "trackio",
            "trackio",
            "trackio",
            "pip install trackio",
            "`trackio.log(dict, step=)`, local SQLite",
            slow=True,
            fn=trial_trackio,
        ),
        Backend(
            "aim",
            "aim",
            "aim",
            "pip install aim",
            "`Run.track(dict, step=)`, local repo",
            points_override=args.mlflow_points,
            fn=trial_aim,
        ),
        Backend(
            "dvclive",
            "dvclive",
            "dvclive",
            "pip install dvclive",
            "`Live.log_metric` per point + `next_step()`",
            points_override=args.mlflow_points,
            fn=trial_dvclive,
        ),
    ]


def installed(module: str | None) -> bool:
    """Whether a module can be found without importing it."""
    if module is None:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def measure(backend: Backend, case: Case, args: argparse.Namespace) -> Result:
    """Run a backend's trials for one case; failures are recorded, never raised."""
    res = Result(backend.name, case.key)
    if not installed(backend.module):
        res.skipped = f"not installed ({backend.pip})"
        return res
    assert backend.fn is not None
    for r in range(args.repeats):
        if backend.points_override is not None:
            n = backend.points_override
        elif backend.slow and r > 0:
            n = args.repeat_points
        else:
            n = args.points
        warm, timed = make_steps(n, case.metrics, seed=r)
        try:
            trial = backend.fn(warm, timed)
        except Exception as exc:
            first_line = str(exc).splitlines()[0][:160] if str(exc) else ""
            res.skipped = f"failed: {type(exc).__name__}: {first_line}"
            log(f"  {backend.name} {case.key} trial {r + 1}: {res.skipped}")
            return res
        res.trials.append(trial)
        extra = ", ".join(f"{k} {v:.3g}" for k, v in trial.extras.items())
        log(
            f"  {backend.name} {case.key} trial {r + 1}: {trial.points:,} points, "
            f"{trial.us_per_point:.3f} us/point, {trial.us_per_call:.3f} us/call  {extra}"
        )
        del warm, timed
    return res


# --------------------------------------------------------------------------- report


def _setup_note(res: Result, mlflow_bench: MlflowBench) -> str:
    parts = []
    init, fin = res.median_extra("init"), res.median_extra("finish")
    names = {
        "runtel": ("init", "finish()"),
        "tensorboardX": ("SummaryWriter()", "close()"),
        "wandb": ("wandb.init", "finish()"),
        "neptune": ("init_run", "stop()"),
        "mlflow": ("start_run", "flush + end_run"),
    }
    label_init, label_fin = names.get(res.backend, ("init", "finish"))
    if res.backend == "mlflow" and mlflow_bench.setup_s is not None:
        parts.append(f"SQLite store creation {fmt_s(mlflow_bench.setup_s)}")
    if init is not None:
        parts.append(f"{label_init} {fmt_s(init)}")
    if fin is not None:
        parts.append(f"{label_fin} {fmt_s(fin)}")
    missing = res.median_extra("missing")
    if missing is not None:
        worst = max(t.extras.get("missing", 0.0) for t in res.trials)
        parts.append("all points read back" if worst == 0 else f"**{worst:.0f} points missing**")
    return "; ".join(parts)


def case_table(case: Case, results: list[Result], mlflow_bench: MlflowBench) -> str:
    """Markdown table of one case."""
    by_name = {r.backend: r for r in results if r.case == case.key}
    rt = by_name.get("runtel")
    rt_point = rt.median_point() if rt and rt.trials and not rt.skipped else None
    rows = []
    for res in by_name.values():
        version = dist_version(res.backend) or ("-" if res.backend == "list.append" else "")
        if res.backend == "opentelemetry":
            version = dist_version("opentelemetry-sdk") or ""
        if res.skipped or not res.trials:
            rows.append([res.backend, version, res.skipped or "no trial", "", "", "", "", "", ""])
            continue
        pts = [t.us_per_point for t in res.trials]
        ratio = "-" if rt_point is None else f"{res.median_point() / rt_point:,.1f}x"
        design = DESIGN_FIGURES.get(res.backend, "")
        rows.append(
            [
                res.backend,
                version,
                res.points_label(),
                fmt_us(res.median_point()),
                fmt_us(res.median_call()),
                ratio,
                f"{fmt_us(min(pts))}-{fmt_us(max(pts))}",
                design,
                _setup_note(res, mlflow_bench),
            ]
        )
    header = [
        "backend",
        "version",
        "points per trial",
        "us/point (median)",
        "us/call (median)",
        "x runtel",
        "us/point min-max",
        "design §5 us/point (a / b)",
        "untimed, median",
    ]
    return (
        f"#### {case.title}, one call = one step = {case.metrics} point{'s' * (case.metrics > 1)}\n\n"
        + md_table(header, rows)
    )


def targets_table(results: list[Result]) -> str:
    """runtel's hot path against the design targets."""
    rows = []
    for case in CASES:
        by_name = {r.backend: r for r in results if r.case == case.key and r.trials and not r.skipped}
        rt = by_name.get("runtel")
        if rt is None:
            continue
        peers = [r for n, r in by_name.items() if n not in ("runtel", "list.append")]
        fastest = min(peers, key=lambda r: r.median_point()) if peers else None
        speedup = fastest.median_point() / rt.median_point() if fastest else None
        floor = by_name.get("list.append")
        rows.append(
            [
                case.title,
                fmt_us(rt.median_point()),
                "yes" if rt.median_point() <= TARGET_US_POINT else "**no**",
                fmt_us(rt.median_call()),
                "yes" if rt.median_call() <= TARGET_US_CALL else "**no**",
                "-"
                if fastest is None or speedup is None
                else f"{speedup:,.1f}x ({fastest.backend})"
                + ("" if speedup >= TARGET_SPEEDUP else " **< 20x**"),
                "-" if floor is None else f"{rt.median_point() / floor.median_point():.1f}x",
            ]
        )
    if not rows:
        return "- runtel hot path not measured (see its row above)."
    return md_table(
        [
            "case",
            "runtel us/point",
            "<= 2 us",
            "us/call",
            "<= 5 us",
            "speed-up over fastest peer (>= 20x)",
            "x list.append",
        ],
        rows,
    )


def fastest_peers(results: list[Result]) -> dict[int, tuple[str, float]]:
    """Per metrics a step: the fastest peer's name and median us/call (``list.append`` is no peer)."""
    out = {}
    for case in CASES:
        peers = [
            r
            for r in results
            if r.case == case.key
            and r.trials
            and not r.skipped
            and r.backend not in ("runtel", "list.append")
        ]
        if peers:
            best = min(peers, key=lambda r: r.median_call())
            out[case.metrics] = (best.backend, best.median_call())
    return out


def notes(args: argparse.Namespace) -> str:
    """Method notes printed under the tables."""
    return "\n".join(
        [
            f"- Medians of {args.repeats} trials, each a fresh run/writer/provider in this one process, "
            "sequentially in the order of the rows; only the logging loop is timed (`time.perf_counter_ns`), "
            "values are pre-built Python floats, a short untimed warm-up (<= 100 steps) precedes each loop, "
            "`gc.collect()` before it, GC left on.",
            f"- Slow peers (tensorboardX, neptune, wandb) log {args.points:,} points in trial 1 and "
            f"{args.repeat_points:,} in trials 2-{args.repeats}; MLflow logs {args.mlflow_points:,} points a "
            "trial (its SQLite flush is the bottleneck).",
            "- One call = one step's logging: one `log` call for runtel, wandb and MLflow; "
            "one `add_scalar` / `append` / `Gauge.set` per metric for the others "
            "(plus one `collect()` for OpenTelemetry).",
            '- wandb: `mode="offline"`, `WANDB_SILENT=true`, `console="off"`, `x_disable_stats=True`; '
            "`wandb.init` is set-up, excluded from the per-point cost; its `wandb-core` service process "
            "runs beside the benchmark and shares the CPU.",
            "- runtel: `system_interval=0`; points read back with `Store(...).run(id).history()` after "
            "`finish()`. MLflow: points read back with `get_metric_history` after the flush.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000, help="points per trial (default 100,000)")
    ap.add_argument(
        "--repeat-points",
        type=int,
        default=None,
        help="points in trials 2.. of slow peers (default points/5)",
    )
    ap.add_argument("--mlflow-points", type=int, default=None, help="points per MLflow trial (default 2,000)")
    ap.add_argument("--store-points", type=int, default=None, help="points of the store runs (default 1M)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--quick", action="store_true", help="10,000 points (MLflow 500, store 100,000): for development"
    )
    ap.add_argument("--only", default="", help="comma-separated backends, e.g. runtel,list.append")
    ap.add_argument("--skip-store", action="store_true", help="leave out the store and import figures")
    ap.add_argument("--skip-sustained", action="store_true", help="leave out bench_hotpath.py's loops")
    ap.add_argument(
        "--hot-repeats", type=int, default=5, help="fresh processes per bench_hotpath.py case (default 5)"
    )
    ap.add_argument("--json", default="", help="also write the raw trials to this JSON file")
    args = ap.parse_args(argv)
    if args.quick:
        args.points = 10_000
    args.repeat_points = args.repeat_points or (args.points if args.quick else max(1_000, args.points // 5))
    args.mlflow_points = args.mlflow_points or (500 if args.quick else 2_000)
    args.store_points = args.store_points or (100_000 if args.quick else 1_000_000)

    os.environ["WANDB_SILENT"] = "true"
    os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "true")
    warnings.filterwarnings("ignore")
    for name in ("mlflow", "alembic", "neptune", "wandb"):
        logging.getLogger(name).setLevel(logging.ERROR)

    only = {s.strip() for s in args.only.split(",") if s.strip()}
    mlflow_bench = MlflowBench()
    results: list[Result] = []
    store_rep: bench_store.StoreReport | None = None
    hot_rep: bench_hotpath.HotReport | None = None
    t_start = time.perf_counter()
    try:
        # Peers print (neptune's logger writes to stdout): keep stdout for the tables only.
        with contextlib.redirect_stdout(sys.stderr):
            for backend in backends(args, mlflow_bench):
                if only and backend.name not in only:
                    continue
                log(f"{backend.name}")
                for case in CASES:
                    results.append(measure(backend, case, args))
                if backend.name == "wandb" and installed("wandb"):
                    import wandb

                    wandb.teardown()
                if (
                    backend.name == "runtel"
                    and not args.skip_store
                    and (not only or "store" in only or "runtel" in only)
                ):
                    store_rep = bench_store.run_all(args.store_points, args.repeats)
                if backend.name == "runtel" and not args.skip_sustained:
                    log("runtel sustained and short loops, fresh processes (bench_hotpath.py)")
                    hot_rep = bench_hotpath.run_all(args.hot_repeats, args.quick)
    finally:
        mlflow_bench.close()
    elapsed = time.perf_counter() - t_start

    out = ["### Hot path: cost of logging a metric", "", machine_table(), ""]
    if hot_rep is not None:
        out += ["#### Sustained (the flush running) beside short loops: runtel against the fastest peer", ""]
        out += [bench_hotpath.hot_tables(hot_rep, fastest_peers(results)), ""]
    out += [case_table(case, results, mlflow_bench) + "\n" for case in CASES]
    out += ["#### runtel against the design targets", "", targets_table(results), ""]
    if store_rep is not None:
        out += ["### runtel store: throughput, finish, read, import", ""]
        out += [bench_store.store_tables(store_rep), ""]
    out += [notes(args), f"- Whole benchmark: {elapsed:,.0f} s wall time.", ""]
    print("\n".join(out))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "args": vars(args),
                    "results": [asdict(r) for r in results],
                    "store": asdict(store_rep) if store_rep else None,
                    "hot": asdict(hot_rep) if hot_rep else None,
                },
                fh,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
