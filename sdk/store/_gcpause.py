"""The cyclic garbage collector held off while a listing builds its objects.

Listing 10,000 runs allocates a few hundred thousand dicts, lists and strings that all stay alive (the
caches keep them; no cycle among them becomes garbage), yet every 700 allocations the collector walks
the young ones, and now and then all of them: a third of the time of ``runtel ls``. Re-enabled as is,
it would then walk every one of them once more (they all count as young). So the outermost block ends
by moving what it allocated straight to the oldest generation (``gc.freeze`` then ``gc.unfreeze``, only
when nothing else in the process froze objects): a cycle among them is still found, by the next full
collection. Reference counting frees everything as usual throughout.
"""

from __future__ import annotations

import gc
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
                if gc.get_freeze_count() == 0:  # someone's frozen objects are theirs to unfreeze
                    gc.freeze()
                    gc.unfreeze()
                gc.enable()
