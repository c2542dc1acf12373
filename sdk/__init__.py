"""runtel: OpenTelemetry-native experiment tracking for machine learning.

``runtel.init(...)`` starts a :class:`Run` (a trace; epochs and phases are spans; metrics
go through OpenTelemetry instruments) recorded exactly into a local store, and
``runtel.Store(...)`` reads runs back, live or finished.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from runtel.errors import (
    ArtifactError,
    ChecksumMismatchError,
    ConfigError,
    FilterSyntaxError,
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
from runtel.store.aggregate import Aggregate
from runtel.store.query import Store, StoredRun

if TYPE_CHECKING:
    from runtel import step_timing
    from runtel._current import current_run, use_run
    from runtel.api import available_exporters, finish, init
    from runtel.importers import import_runs
    from runtel.run import Run
    from runtel.store.media import MediaItem

__version__ = "0.1.0"

#: Names loaded on first use, so that reading runs (``runtel ls``, ``runtel.Store``) does not import
#: the OpenTelemetry SDK and the run machinery: ``import runtel`` costs ~60 ms instead of ~160.
_LAZY = {
    "Run": "runtel.run",
    "init": "runtel.api",
    "finish": "runtel.api",
    "available_exporters": "runtel.api",
    "current_run": "runtel._current",
    "use_run": "runtel._current",
    "step_timing": "runtel",
    "import_runs": "runtel.importers",
    "MediaItem": "runtel.store.media",
}


def __dir__() -> list[str]:
    """The lazy names too (tab completion, ``help``)."""
    return sorted(globals().keys() | _LAZY.keys())


def __getattr__(name: str) -> Any:
    """A name of :data:`_LAZY`, imported now and kept as a plain attribute of the package."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runtel' has no attribute {name!r}")
    value = import_module(f"runtel.{name}") if module == "runtel" else getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Aggregate",
    "ArtifactError",
    "Audio",
    "ChecksumMismatchError",
    "ConfigError",
    "FilterSyntaxError",
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
