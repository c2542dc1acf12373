"""runtel: OpenTelemetry-native experiment tracking for machine learning.

``runtel.init(...)`` starts a :class:`Run` (a trace; epochs and phases are spans; metrics
go through OpenTelemetry instruments) recorded exactly into a local store, and
``runtel.Store(...)`` reads runs back, live or finished.
"""

from typing import Any

from runtel import step_timing
from runtel._current import current_run, use_run
from runtel.api import available_exporters, finish, init
from runtel.errors import (
    ArtifactError,
    ChecksumMismatchError,
    ConfigError,
    InvalidMediaError,
    InvalidMetricError,
    InvalidNameError,
    InvalidParamError,
    InvalidStepError,
    InvalidValueError,
    MetricNotFoundError,
    MissingExtraError,
    RunFinishedError,
    RunForkedError,
    RunNotFoundError,
    RunStillRunningError,
    RuntelError,
    StoreCorruptError,
    StoreWriteError,
)
from runtel.media import Audio, Image, Table, Text
from runtel.run import Run
from runtel.store.query import Store, StoredRun

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``runtel.import_runs`` and ``runtel.MediaItem`` load on first use: ``import runtel`` stays fast."""
    if name == "import_runs":
        from runtel.importers import import_runs

        return import_runs
    if name == "MediaItem":
        from runtel.store.media import MediaItem

        return MediaItem
    raise AttributeError(f"module 'runtel' has no attribute {name!r}")


__all__ = [
    "ArtifactError",
    "Audio",
    "ChecksumMismatchError",
    "ConfigError",
    "Image",
    "InvalidMediaError",
    "InvalidMetricError",
    "InvalidNameError",
    "InvalidParamError",
    "InvalidStepError",
    "InvalidValueError",
    "MediaItem",
    "MetricNotFoundError",
    "MissingExtraError",
    "Run",
    "RunFinishedError",
    "RunForkedError",
    "RunNotFoundError",
    "RunStillRunningError",
    "RuntelError",
    "Store",
    "StoreCorruptError",
    "StoreWriteError",
    "StoredRun",
    "Table",
    "Text",
    "__version__",
    "available_exporters",
    "current_run",
    "finish",
    "import_runs",
    "init",
    "step_timing",
    "use_run",
]
