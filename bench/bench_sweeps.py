"""runtel's overhead per trial and per reported value under Optuna and Ray Tune, against running without it.

Two measurements per engine. (1) Whole searches with and without runtel, so the cost is seen in
context (a search's own time per trial). (2) The time spent inside runtel's hooks themselves (the Optuna
callback and objective wrapper, the Ray Tune callback's methods on the driver), timed per trial, with
few and with many reported values per trial: the median per trial at few values is the per-trial
overhead, the growth of that median per extra value the per-value overhead (Ray: the median of the
callback's ``log_trial_result`` calls, one per reported result). (2) is what runtel adds to
the search's loop; on a shared machine it is much less noisy than a difference of two whole searches.
Optuna: in-memory studies, RandomSampler. Ray Tune: a local cluster (``num_cpus=2``).

    python bench/bench_sweeps.py [--trials 30] [--values 5 5000] [--ray-trials 2] [--ray-values 5 200]
                                 [--no-ray]
"""

from __future__ import annotations

import argparse
import functools
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


class HookTimer:
    """Seconds spent inside wrapped runtel hooks, summed per trial key."""

    def __init__(self) -> None:
        self.per_trial: dict[Any, float] = {}
        #: Each call's seconds, per hook name.
        self.calls: dict[str, list[float]] = {}

    def wrap(self, hook: Callable[..., Any], key: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(hook)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                spent = time.perf_counter() - started
                trial = key(*args, **kwargs)
                self.per_trial[trial] = self.per_trial.get(trial, 0.0) + spent
                self.calls.setdefault(hook.__name__, []).append(spent)

        return timed

    def median_ms(self) -> float:
        return statistics.median(self.per_trial.values()) * 1e3


def optuna_study(trials: int, values: int, with_runtel: bool, base_dir: str) -> tuple[float, HookTimer]:
    """Seconds for one study, and the time runtel's callback took per trial."""
    import optuna

    from runtel.integrations.optuna import RuntelCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        for step in range(values):
            trial.report(x * step, step)
        return x

    timer = HookTimer()
    study = optuna.create_study(
        sampler=optuna.samplers.RandomSampler(seed=0), pruner=optuna.pruners.NopPruner()
    )
    started = time.perf_counter()
    if not with_runtel:
        study.optimize(objective, n_trials=trials)
        return time.perf_counter() - started, timer
    with RuntelCallback(project="bench", base_dir=base_dir, system_interval=0) as cb:
        hook = timer.wrap(cb, key=lambda study, trial: trial.number)
        study.optimize(objective, n_trials=trials, callbacks=[hook])
    return time.perf_counter() - started, timer


def ray_experiment(
    trials: int, values: int, with_runtel: bool, base_dir: str, storage: str
) -> tuple[float, HookTimer]:
    from ray import tune

    from runtel.integrations.ray import RuntelLoggerCallback

    def trainable(config: dict[str, Any]) -> None:
        for step in range(config["values"]):
            tune.report({"score": config["x"] * step})

    timer = HookTimer()
    callbacks = []
    if with_runtel:
        callback = RuntelLoggerCallback(project="bench", base_dir=base_dir, system_interval=0)
        for name in ("log_trial_start", "log_trial_result", "log_trial_end"):
            setattr(callback, name, timer.wrap(getattr(callback, name), key=_ray_trial_key(name)))
        callbacks.append(callback)
    tuner = tune.Tuner(
        trainable,
        param_space={"x": tune.grid_search(list(range(trials))), "values": values},
        run_config=tune.RunConfig(storage_path=storage, callbacks=callbacks, verbose=0),
    )
    started = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - started, timer


def _ray_trial_key(hook: str) -> Callable[..., Any]:
    """The trial id from a hook's arguments (``log_trial_result(iteration, trial, result)``; the others
    take the trial first)."""

    def key(*args: Any, **kwargs: Any) -> Any:
        trial = kwargs.get("trial") or (args[1] if hook == "log_trial_result" else args[0])
        return trial.trial_id

    return key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--values", type=int, nargs=2, default=(5, 5000))
    parser.add_argument("--ray-values", type=int, nargs=2, default=(5, 200))
    parser.add_argument("--ray-trials", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--no-optuna", action="store_true")
    args = parser.parse_args()
    print(machine_table())
    print(f"\noptuna {dist_version('optuna')}, ray {dist_version('ray')}\n", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        engines = [] if args.no_optuna else [("Optuna", args.trials, optuna_study)]
        for engine, trials, run in engines + ([] if args.no_ray else [("Ray Tune", args.ray_trials, None)]):
            low, high = args.values if engine == "Optuna" else args.ray_values
            if run is None:
                import ray

                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                storage = os.path.join(scratch, "ray_results")

                def run(
                    t: int, v: int, on: bool, base: str, storage: str = storage
                ) -> tuple[float, HookTimer]:
                    return ray_experiment(t, v, on, base, storage)

            measured: dict[tuple[bool, int], tuple[float, HookTimer]] = {}
            for values in (low, high):
                for with_runtel in (False, True):
                    base = os.path.join(scratch, f"{engine}-{values}-{with_runtel}")
                    measured[(with_runtel, values)] = run(trials, values, with_runtel, base)
            if engine == "Ray Tune":
                ray.shutdown()
            hook_low, hook_high = measured[(True, low)][1].median_ms(), measured[(True, high)][1].median_ms()
            results = measured[(True, high)][1].calls.get("log_trial_result")
            per_value = (  # Ray: one hook call per reported result, timed one by one
                statistics.median(results) * 1e6 if results else (hook_high - hook_low) / (high - low) * 1e3
            )
            rows.append(
                (
                    engine,
                    f"{trials} x {low} / {high}",
                    measured[(False, low)][0] / trials * 1e3,
                    measured[(True, low)][0] / trials * 1e3,
                    measured[(False, high)][0] / trials * 1e3,
                    measured[(True, high)][0] / trials * 1e3,
                    hook_low,
                    per_value,
                )
            )
            print(f"{engine}: {measured}", flush=True)
    print()
    print(
        "| engine | trials x values (few / many) | ms/trial bare, few | with runtel "
        "| ms/trial bare, many | with runtel | runtel hooks, ms per trial | runtel hooks, µs per value |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| {} | {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} |".format(*row))


if __name__ == "__main__":
    main()
