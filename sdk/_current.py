"""The current run of a thread: what ``runtel.current_run()`` returns.

Integrations that start a run for a piece of user code (an Optuna trial's objective, maybe on one of
``n_jobs`` threads) make it current in that thread only, so code deep inside logs into the right run.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from runtel.run import Run, active_runs

_local = threading.local()


def current_run() -> Run | None:
    """The run made current in this thread (innermost :func:`use_run`), else the latest run started
    and still open in the process, else None."""
    stack: list[Run] = getattr(_local, "stack", [])
    if stack:
        return stack[-1]
    runs = active_runs()
    return runs[-1] if runs else None


@contextlib.contextmanager
def use_run(run: Run) -> Iterator[Run]:
    """Make ``run`` this thread's current run inside the block (blocks nest; other threads unaffected)."""
    stack: list[Run] = _local.__dict__.setdefault("stack", [])
    stack.append(run)
    try:
        yield run
    finally:
        stack.pop()
