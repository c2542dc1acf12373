"""The interpreter's thread switch interval, lowered while a run is open.

A training loop holds the interpreter lock almost all the time. Each time the flush thread or
the store's writer gives the lock up (a file write, a large numpy operation) it waits for the
training thread's next forced switch to get it back: 5 ms by default. At a few dozen such waits
per batch the writer fell behind a fast loop, so its queue (memory) and the points a kill -9
loses grew with the run. At 1 ms the writer keeps up; the training thread pays only the extra
switches, a few microseconds each. The user's own interval is restored when the last run ends,
and a smaller one is never raised.
"""

from __future__ import annotations

import sys
import threading

#: Seconds; the interval while a run is open (when the user's is larger).
RUN_SWITCH_INTERVAL = 0.001

_lock = threading.Lock()
_holders = 0
_saved: float | None = None


def hold() -> None:
    """A run starts: lower the switch interval to ``RUN_SWITCH_INTERVAL`` if it is larger."""
    global _holders, _saved
    with _lock:
        if _holders == 0:
            current = sys.getswitchinterval()
            _saved = current if current > RUN_SWITCH_INTERVAL else None
            if _saved is not None:
                sys.setswitchinterval(RUN_SWITCH_INTERVAL)
        _holders += 1


def release() -> None:
    """A run ends: the last one restores the interval, unless the user changed it meanwhile."""
    global _holders, _saved
    with _lock:
        if _holders == 0:
            return
        _holders -= 1
        if _holders == 0 and _saved is not None:
            if abs(sys.getswitchinterval() - RUN_SWITCH_INTERVAL) < 1e-6:
                sys.setswitchinterval(_saved)
            _saved = None
