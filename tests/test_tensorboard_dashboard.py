"""``TensorBoardTracker.launch_dashboard`` with a real tensorboard: busy ports refused, servers stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from runtel.errors import PortInUseError
from runtel.tracking import TensorBoardTracker
from tests.conftest import run_python
from tests.ports import is_open


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited
        return stat.read().split(") ")[-1][0] != "Z"


def gone(pid: int, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not alive(pid)


def test_a_busy_port_is_refused_and_no_url_returned(tmp_path: Path) -> None:
    tracker = TensorBoardTracker("dash", log_dir=str(tmp_path / "tb"))
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        with pytest.raises(PortInUseError, match=rf"port {port} is in use.*port=0"):
            tracker.launch_dashboard(port=port)
    assert tracker.dashboard_pid is None
    tracker.finish()


def test_port_zero_picks_a_free_port_and_finish_stops_the_server(tmp_path: Path) -> None:
    tracker = TensorBoardTracker("dash", log_dir=str(tmp_path / "tb"))
    tracker.log_metrics({"loss": 0.5}, step=1)
    url = tracker.launch_dashboard(port=0)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    with urllib.request.urlopen(url + "data/environment", timeout=30) as response:
        assert Path(json.loads(response.read())["data_location"]) == tmp_path / "tb"
    pid = tracker.dashboard_pid
    assert pid is not None
    tracker.finish()
    assert gone(pid) and not is_open(port)


EXIT_SCRIPT = """
import json
from runtel.tracking import TensorBoardTracker
stopped = TensorBoardTracker("dash", log_dir="tb-a")
stopped.finish()
stopped.launch_dashboard(port=0)  # after finish, as the seed's example does: stopped at exit
kept = TensorBoardTracker("dash", log_dir="tb-b")
kept.finish()
kept.launch_dashboard(port=0, keep=True)
print(json.dumps([stopped.dashboard_pid, kept.dashboard_pid]))
"""


def test_the_dashboard_stops_at_exit_unless_kept(tmp_path: Path) -> None:
    stopped, kept = json.loads(run_python(EXIT_SCRIPT, tmp_path).splitlines()[-1])
    try:
        assert gone(stopped)
        assert alive(kept)
    finally:
        os.kill(kept, signal.SIGTERM)
    assert gone(kept)
