"""The cyclic garbage collector held off while a listing builds its objects.

Listing 10,000 runs allocates a few hundred thousand dicts, lists and strings that all stay alive (the
caches keep them; no cycle among them becomes garbage), yet every 700 allocations the collector walked
the young ones, and now and then all of them: a third of the time of ``runtel ls``. The pause is the
whole process's (``gc.disable``), so it is short and leaves nothing behind: when the last block ends
the collector runs on by its normal rules, and what was made meanwhile (any thread's cycles
included) is collected or promoted as usual. A process forked during a pause starts with the
collector as it was before the pause. One race is left: a ``gc.disable()`` another thread makes while
a listing runs is undone when the listing ends (the collector is put back as it was when it began).
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection inside the block (nested and concurrent blocks: until the last one ends)."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()


def _after_fork_in_child() -> None:
    """The child has none of the threads whose blocks would end the pause, and maybe a held lock."""
    global _lock, _depth
    _lock = threading.Lock()
    if _depth:
        _depth = 0
        if _was_enabled:
            gc.enable()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
