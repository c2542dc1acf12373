"""runtel's overhead per trial and per reported value under Optuna and Ray Tune, against running without it.

Each case runs the same study twice: with few and with many reported values per trial. The difference
to the bare run, per trial, is the per-trial overhead (a run started, params, outcome, finish); the
growth between the two, per value, is the per-reported-value overhead. Optuna: medians of ``--repeats``
studies in memory (RandomSampler, so the sampler costs the same either way). Ray Tune: one local
cluster (``num_cpus=2``), one experiment per case. Prints a Markdown table.

    python bench/bench_sweeps.py [--trials 40] [--values 5 100] [--repeats 3] [--no-ray]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import dist_version, machine_table


def optuna_study(trials: int, values: int, mode: str, base_dir: str) -> float:
    """Seconds for one study; ``mode``: bare, callback (trial runs made after the fact) or tracked
    (``track_in_runtel``: the run open during the objective, which also logs each value)."""
    import optuna

    from runtel.integrations.optuna import RuntelCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        run = current() if mode == "tracked" else None
        for step in range(values):
            trial.report(x * step, step)
            if run is not None:
                run.log({"curve": x * step}, step=step)
        return x

    import runtel

    current = runtel.current_run
    study = optuna.create_study(
        sampler=optuna.samplers.RandomSampler(seed=0), pruner=optuna.pruners.NopPruner()
    )
    started = time.perf_counter()
    if mode == "bare":
        study.optimize(objective, n_trials=trials)
    else:
        with RuntelCallback(project="bench", base_dir=base_dir, system_interval=0) as cb:
            func: Callable[[Any], float] = cb.track_in_runtel()(objective) if mode == "tracked" else objective
            study.optimize(func, n_trials=trials, callbacks=[cb])
    return time.perf_counter() - started


def ray_experiment(trials: int, values: int, with_runtel: bool, base_dir: str, storage: str) -> float:
    from ray import tune

    from runtel.integrations.ray import RuntelLoggerCallback

    def trainable(config: dict[str, Any]) -> None:
        for step in range(config["values"]):
            tune.report({"score": config["x"] * step})

    callbacks = (
        [RuntelLoggerCallback(project="bench", base_dir=base_dir, system_interval=0)] if with_runtel else []
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"x": tune.grid_search(list(range(trials))), "values": values},
        run_config=tune.RunConfig(storage_path=storage, callbacks=callbacks, verbose=0),
    )
    started = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - started


def overheads(
    timings: dict[tuple[str, int], float], trials: int, low: int, high: int, mode: str
) -> tuple[float, float]:
    """(ms per trial at ``low`` values, µs per extra reported value) of ``mode`` against ``bare``."""
    per_trial = (timings[(mode, low)] - timings[("bare", low)]) / trials
    growth = (timings[(mode, high)] - timings[("bare", high)]) - (
        timings[(mode, low)] - timings[("bare", low)]
    )
    return per_trial * 1e3, growth / (trials * (high - low)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--values", type=int, nargs=2, default=(5, 100))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ray-trials", type=int, default=4)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    low, high = args.values
    print(machine_table())
    print(f"\noptuna {dist_version('optuna')}, ray {dist_version('ray')}")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        timings: dict[tuple[str, int], float] = {}
        for values in (low, high):
            for mode in ("bare", "callback", "tracked"):
                samples = [
                    optuna_study(args.trials, values, mode, os.path.join(scratch, f"o{mode}{values}{i}"))
                    for i in range(args.repeats)
                ]
                timings[(mode, values)] = statistics.median(samples)
        for mode in ("callback", "tracked"):
            per_trial, per_value = overheads(timings, args.trials, low, high, mode)
            bare = timings[("bare", low)] / args.trials * 1e3
            rows.append((f"Optuna, {mode}", bare, per_trial, per_value))
        print(f"optuna timings (s): {timings}", flush=True)
        if not args.no_ray:
            import ray

            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            try:
                ray_timings: dict[tuple[str, int], float] = {}
                for values in (low, high):
                    for mode in ("bare", "callback"):
                        ray_timings[(mode, values)] = ray_experiment(
                            args.ray_trials,
                            values,
                            mode == "callback",
                            os.path.join(scratch, f"r{mode}{values}"),
                            os.path.join(scratch, "ray_results"),
                        )
            finally:
                ray.shutdown()
            print(f"ray timings (s): {ray_timings}", flush=True)
            per_trial, per_value = overheads(ray_timings, args.ray_trials, low, high, "callback")
            bare = ray_timings[("bare", low)] / args.ray_trials * 1e3
            rows.append(("Ray Tune, LoggerCallback", bare, per_trial, per_value))
    print(f"\n{args.trials} Optuna trials (median of {args.repeats} studies), {args.ray_trials} Ray trials;")
    print(f"reported values per trial: {low} and {high}\n")
    print("| case | bare, ms per trial | runtel overhead, ms per trial | runtel overhead, µs per value |")
    print("|---|---|---|---|")
    for name, bare, per_trial, per_value in rows:
        print(f"| {name} | {bare:.2f} | {per_trial:.2f} | {per_value:.1f} |")


if __name__ == "__main__":
    main()
