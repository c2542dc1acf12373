"""The base :class:`runtel.Run` is built on: ``runtel._hotpath_c`` (``log``'s common case in C, the
columns filled as it goes) where the extension is built, else its pure-Python twin
:mod:`runtel._hotpath_py`. ``RUNTEL_PURE_PYTHON=1`` chooses the twin (the suite runs both)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtel._hotpath_py import HotPath, PointsBlock

    ACCELERATED: bool
else:
    try:
        if os.environ.get("RUNTEL_PURE_PYTHON", "") not in ("", "0"):
            raise ImportError("RUNTEL_PURE_PYTHON is set")
        from runtel._hotpath_c import HotPath, PointsBlock
    except ImportError:
        from runtel._hotpath_py import HotPath, PointsBlock

        ACCELERATED = False
    else:
        ACCELERATED = True

__all__ = ["ACCELERATED", "HotPath", "PointsBlock"]
