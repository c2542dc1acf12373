"""The seeds' APIs as thin facades over :class:`runtel.Run` and :class:`runtel.Store`.

The unified tracker API (``BaseTracker`` ... ``create_multi_tracker``, ``ExperimentLogger``; see
docs/trackers.md) and the experiment API (``ExperimentTracker``, ``ExperimentManager``,
``MetricVisualizer``; see docs/experiment-api.md).
"""

from typing import TYPE_CHECKING, Any

from runtel.errors import RunStillRunningError
from runtel.tracking.experiment import ArtifactVersion, ExperimentTracker
from runtel.tracking.logger import ExperimentLogger
from runtel.tracking.manager import Comparison, ExperimentManager
from runtel.tracking.trackers import (
    BaseTracker,
    LocalTracker,
    MLflowTracker,
    MultiTracker,
    NeptuneTracker,
    RunTracker,
    TensorBoardTracker,
    WandbTracker,
    create_multi_tracker,
    create_tracker,
)
from runtel.tracking.visualizer import MetricVisualizer, minmax_downsample

if TYPE_CHECKING:
    from runtel.tracking.comparison_ui import ExperimentComparisonUI, launch_comparison_ui

_LAZY = ("ExperimentComparisonUI", "launch_comparison_ui")


def __getattr__(name: str) -> Any:
    """The UI facade loads on first use, so ``python -m runtel.tracking.comparison_ui`` runs it fresh."""
    if name in _LAZY:
        from runtel.tracking import comparison_ui

        return getattr(comparison_ui, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ArtifactVersion",
    "BaseTracker",
    "Comparison",
    "ExperimentComparisonUI",
    "ExperimentLogger",
    "ExperimentManager",
    "ExperimentTracker",
    "LocalTracker",
    "MLflowTracker",
    "MetricVisualizer",
    "MultiTracker",
    "NeptuneTracker",
    "RunStillRunningError",
    "RunTracker",
    "TensorBoardTracker",
    "WandbTracker",
    "create_multi_tracker",
    "create_tracker",
    "launch_comparison_ui",
    "minmax_downsample",
]
