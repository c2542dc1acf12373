"""The seeds' APIs as thin facades over :class:`runtel.Run` and :class:`runtel.Store`.

The unified tracker API (``BaseTracker`` ... ``create_multi_tracker``, ``ExperimentLogger``; see
docs/trackers.md) and the experiment API (``ExperimentTracker``, ``ExperimentManager``,
``MetricVisualizer``; see docs/experiment-api.md).
"""

from runtel.errors import RunStillRunningError
from runtel.tracking.comparison_ui import ExperimentComparisonUI, launch_comparison_ui
from runtel.tracking.experiment import ArtifactVersion, ExperimentTracker
from runtel.tracking.logger import ExperimentLogger
from runtel.tracking.manager import Comparison, ExperimentManager
from runtel.tracking.trackers import (
    BaseTracker,
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

__all__ = [
    "ArtifactVersion",
    "BaseTracker",
    "Comparison",
    "ExperimentComparisonUI",
    "ExperimentLogger",
    "ExperimentManager",
    "ExperimentTracker",
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
