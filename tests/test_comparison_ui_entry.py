"""The seed's ways to start the comparison UI: ``ExperimentComparisonUI(manager, port).run()``,
``launch_comparison_ui()`` and ``python -m runtel.tracking.comparison_ui``, each serving a real store."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import runtel
from runtel.tracking import ExperimentComparisonUI, ExperimentManager
from runtel.ui import BackgroundServer


@pytest.fixture
def stored(base_dir: Path) -> Path:
    with runtel.init(project="entry", name="seeded", base_dir=str(base_dir)) as run:
        run.log({"loss": 1.0})
    return base_dir.absolute()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text: str = response.read().decode("utf-8")
        return text


def _layout(url: str) -> str:
    """The page's layout as plain JSON text (Dash escapes ``/``): it names the store the page reads."""
    return json.dumps(json.loads(_get(f"{url}_dash-layout")), ensure_ascii=False)


def _serve_in_subprocess(*args: str) -> tuple[str, str, str]:
    """Start ``python *args``, wait for its ``runtel UI at`` line, fetch the page and the layout, stop it.

    Returns ``(url, layout, stderr)``.
    """
    process = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    lines: list[str] = []
    try:
        while not lines or "runtel UI at" not in lines[-1]:
            line = process.stderr.readline()
            assert line, f"the UI exited before printing its address: {''.join(lines)}"
            lines.append(line)
        url = lines[-1].split("runtel UI at ")[1].split()[0]
        assert "runtel · compare runs" in _get(url)
        layout = _layout(url)
    finally:
        process.terminate()
        process.wait(timeout=10)
    return url, layout, "".join(lines) + process.stderr.read()


def test_module_entry_point_serves_without_a_runtime_warning(stored: Path) -> None:
    url, layout, stderr = _serve_in_subprocess(
        "-m", "runtel.tracking.comparison_ui", "--port", "0", "--base-dir", str(stored)
    )
    assert url.startswith("http://127.0.0.1:")
    assert str(stored) in layout
    assert "Warning" not in stderr, stderr


def test_launch_comparison_ui_serves_the_given_store(stored: Path) -> None:
    code = (
        "from runtel.tracking import launch_comparison_ui\n"
        f"launch_comparison_ui(port=0, base_dir={str(stored)!r})\n"
    )
    url, layout, _ = _serve_in_subprocess("-c", code)
    assert url.startswith("http://127.0.0.1:") and str(stored) in layout


def test_experiment_comparison_ui_run_serves_the_managers_store(stored: Path) -> None:
    code = (
        "from runtel.tracking import ExperimentComparisonUI, ExperimentManager\n"
        f"ui = ExperimentComparisonUI(ExperimentManager({str(stored)!r}), port=0)\n"
        "ui.run(debug=False, host='127.0.0.1')\n"
    )
    url, layout, _ = _serve_in_subprocess("-c", code)
    assert url.startswith("http://127.0.0.1:") and str(stored) in layout


def test_experiment_comparison_ui_builds_its_app_at_once(stored: Path) -> None:
    ui = ExperimentComparisonUI(ExperimentManager(stored), port=8123)
    assert ui.port == 8123 and ui.manager.base_dir == stored
    server = BackgroundServer(ui.app)
    try:
        assert str(stored) in _layout(server.url)
    finally:
        server.close()
